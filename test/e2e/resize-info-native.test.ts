// resize --info measures ext2/3/4 natively (issue 24): the same Minimum as the appliance path on qcow2 and ploop,
// GPT, MBR and no table; no appliance starts; and a shrink to the natively printed Minimum succeeds with the
// filesystem checking clean (the factory's verifier runs fsck). Where the native reading is not certain (a
// filesystem that claims more blocks than its partition holds) the appliance measures, and -v says why.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { buildImage, verifyImage } from '../factory/index.js';
import type { ContentKind, ImageFormat, TableKind } from '../factory/index.js';
import { caseFolders } from '../helpers/dirs.js';
import { cli, MiB, resize } from './resize-support.js';
import { readDiskFacts } from '../../src/commands/resize/facts.js';
import { sizeLimits } from '../../src/commands/resize/info.js';
import { openImage } from '../../src/commands/open.js';
import { guestDrive } from '../../src/formats/image.js';
import { GuestSession } from '../../src/guest/session.js';

const { fresh } = caseFolders('prl-info-native-');

interface NativeInfo {
  minimum: number;
  minimumKeepLastPartition: number;
  stderr: string;
}

async function nativeInfo(hdd: string): Promise<NativeInfo> {
  const result = await cli(['resize', '--info', '--json', '-v', '--hdd', hdd]);
  expect(result.code, result.stderr).toBe(0);
  const json = JSON.parse(result.stdout.trim().split('\n').pop()!) as NativeInfo;
  return { minimum: json.minimum, minimumKeepLastPartition: json.minimumKeepLastPartition, stderr: result.stderr };
}

/** The appliance path exactly as resize --info took it before issue 24: the filesystem's measure() in a guest. */
async function applianceLimits(hdd: string): Promise<{ minimumBytes: number; minimumKeepLastPartitionBytes: number }> {
  const opened = await openImage(hdd, 'query');
  try {
    const facts = await readDiskFacts(opened.image);
    const content = facts.content!;
    const guest = await GuestSession.launch([guestDrive(opened.image, true)]);
    try {
      const measured = await content.fs.measure({ guest, device: facts.guestDevice }, content.probe);
      const limits = sizeLimits(facts, measured);
      return { minimumBytes: limits.minimumBytes, minimumKeepLastPartitionBytes: limits.minimumKeepLastPartitionBytes };
    } finally {
      await guest.close();
    }
  } finally {
    opened.lock.release();
  }
}

const CASES: { format: ImageFormat; table: TableKind; content: ContentKind; shrink: boolean }[] = [
  { format: 'qcow2', table: 'gpt', content: 'ext4', shrink: true },
  { format: 'ploop', table: 'gpt', content: 'ext4', shrink: true },
  { format: 'qcow2', table: 'mbr', content: 'ext3', shrink: false },
  { format: 'ploop', table: 'none', content: 'ext2', shrink: false },
];

describe('resize --info without the appliance (ext2/3/4)', () => {
  for (const spec of CASES) {
    it(`${spec.format} ${spec.table} ${spec.content}: the appliance's Minimum, no appliance started${spec.shrink ? ', and a shrink to it succeeds' : ''}`, async () => {
      const image = await buildImage({ ...spec, dir: fresh(), sizeMiB: 1024, filesMiB: 96, deletedMiB: 32 });
      const native = await nativeInfo(image.hdd);
      expect(native.stderr).toMatch(new RegExp(`measured an ${spec.content} filesystem natively`));
      expect(native.stderr).not.toMatch(/Starting the appliance|qemu-system|guestfs/i);
      const appliance = await applianceLimits(image.hdd);
      expect([native.minimum, native.minimumKeepLastPartition]).toEqual([appliance.minimumBytes, appliance.minimumKeepLastPartitionBytes]);
      if (!spec.shrink) return;
      const shrunk = await resize(image.hdd, `${Math.ceil(native.minimum / MiB)}M`, '--resize_partition');
      expect(shrunk.code, shrunk.stderr).toBe(0);
      await verifyImage(image);
    }, 900_000);
  }

  it('falls back to the appliance, saying why under -v, where the filesystem claims more than its partition', async () => {
    const image = await buildImage({ format: 'qcow2', table: 'none', content: 'ext4', dir: fresh(), sizeMiB: 512, filesMiB: 32, deletedMiB: 0 });
    // The disk shrinks under the filesystem by 4 MiB (a truncated copy): the superblock now promises blocks past the end.
    execFileSync('qemu-img', ['resize', '-q', '--shrink', '-f', 'qcow2', image.hdd, `${512 - 4}M`]);
    const result = await cli(['resize', '--info', '--json', '-v', '--hdd', image.hdd]);
    expect(result.stderr).toMatch(/measuring an ext4 filesystem in the appliance: the native reading is not certain \(the filesystem is larger than its container\)/);
  }, 900_000);
});
