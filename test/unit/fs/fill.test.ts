// The fill rule (docs/resize.md): each content's probe knows its unit, and fitBytes — the size a shrink asks for —
// is exactly what the format's own mkfs makes of a container whose size is not a whole number of 4 KiB (a GPT
// partition ending at the last usable sector); the planner shrinks to it, so NTFS gets the partition's exact size.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { identify, PROBE_BYTES } from '../../../src/fs/registry.js';
import { planResize } from '../../../src/commands/resize/plan.js';
import type { DiskFacts } from '../../../src/commands/resize/facts.js';
import { cleanup } from '../partitions/disk-fixture.js';
import { planFacts } from '../plan-fixture.js';

const work = mkdtempSync(join(tmpdir(), 'prl-fs-fill-'));
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  cleanup();
});
const MiB = 1024 * 1024;

function made(name: string, bytes: number, mkfs: string, args: string[]): Buffer {
  const path = join(work, name);
  writeFileSync(path, '');
  truncateSync(path, bytes);
  execFileSync(mkfs, [...args, path], { env: { ...process.env, LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] });
  const buffer = Buffer.alloc(PROBE_BYTES);
  const fd = openSync(path, 'r');
  readSync(fd, buffer, 0, PROBE_BYTES, 0);
  closeSync(fd);
  return buffer;
}

// 15 sectors past a whole MiB: the shape of a GPT partition that ends at the last usable sector.
const odd = (mib: number): number => mib * MiB + 15 * 512;

describe('fitBytes agrees with what mkfs makes of the container', () => {
  it.each([
    ['ext4', 64, 'mkfs.ext4', ['-q', '-F', '-b', '4096'], 4096],
    // 63 MiB: at 64 MiB the last 1 KiB group would be too small, and mke2fs (like resize2fs) drops it.
    ['ext2', 63, 'mkfs.ext2', ['-q', '-F', '-b', '1024'], 1024],
    ['btrfs', 160, 'mkfs.btrfs', ['-q', '-f'], 4096],
    ['xfs', 320, 'mkfs.xfs', ['-q', '-f'], 4096],
    ['swap', 32, 'mkswap', ['-q'], 4096],
    ['ntfs', 64, 'mkntfs', ['-q', '-F', '-Q'], 4096],
  ] as const)('%s', (type, mib, mkfs, args, unit) => {
    const found = identify(made(`${type}.img`, odd(mib), mkfs, [...args]))!;
    expect(found.probe.blockBytes).toBe(unit);
    const fit = found.fs.fitBytes(odd(mib), found.probe);
    if (type === 'ntfs') {
      // mkntfs ends the volume one sector before the container's end, with the backup boot sector there; the
      // probe counts that sector. ntfsresize is given the container's exact size and does the same.
      expect(fit).toBe(odd(mib));
      expect(found.probe.sizeBytes).toBe(odd(mib));
    } else {
      // ext rounds 1 KiB blocks down to whole 4 KiB pages (mke2fs, and resize2fs growing to the device).
      const step = type.startsWith('ext') ? Math.max(unit, 4096) : unit;
      expect(fit).toBe(Math.floor(odd(mib) / step) * step);
      expect(found.probe.sizeBytes).toBe(fit);
    }
  });
});

const GPT = 'label: gpt\nstart=2048, size=16384\nstart=18432, size=241664\n';

function gptFacts(type: 'ntfs' | 'ext4' | 'ext2', blockBytes: number): Promise<DiskFacts> {
  return planFacts(GPT, 128, { type, sizeBytes: 241664 * 512, blockBytes });
}

describe('planResize shrinks the content to its fit of the new partition', () => {

  it.each([
    ['ntfs', 512, (container: number) => container],
    ['ext4', 4096, (container: number) => Math.floor(container / 4096) * 4096],
    ['ext2', 1024, (container: number) => Math.floor(container / 4096) * 4096],
  ] as const)('%s', async (type, blockBytes, expected) => {
    const facts = await gptFacts(type, blockBytes);
    const last = facts.last!;
    const plan = planResize(facts, 64 * MiB, {
      resizePartition: true,
      limits: { minimumBytes: 60 * MiB, minimumKeepLastPartitionBytes: 128 * MiB, contentMinimumBytes: 50 * MiB, warnings: [] },
    });
    expect(plan.steps.map((s) => s.kind)).toEqual(['begin-overlay', 'shrink-content', 'write-table', 'commit-overlay', 'shrink-image']);
    const write = plan.steps.find((s) => s.kind === 'write-table')!;
    const container = ((write as { toEndSector: number }).toEndSector - last.startSector + 1) * 512;
    // The GPT's last usable sector makes the new partition 15 sectors past a whole 4 KiB.
    expect(container % 4096).not.toBe(0);
    expect(plan.steps.find((s) => s.kind === 'shrink-content')).toMatchObject({ toBytes: expected(container) });
  });
});

describe('planResize fits the content to a moved end, however little it moved', () => {
  it('an NTFS volume filling its partition grows with a disk grown by 64 KiB', async () => {
    // As mkntfs leaves it: the backup boot sector is the partition's last sector.
    const facts = await gptFacts('ntfs', 4096);
    const plan = planResize(facts, 128 * MiB + 64 * 1024, { resizePartition: true });
    expect(plan.steps.map((s) => s.kind)).toEqual(['grow-image', 'begin-overlay', 'write-table', 'grow-content', 'commit-overlay']);
  });
});
