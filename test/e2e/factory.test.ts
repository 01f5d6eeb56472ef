// The factory builds every format x content (every table at least once) and the verifier passes on each; then the
// verifier is shown to fail on altered, missing and extra files, a damaged filesystem, a changed other partition and
// a corrupt container.
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildImage,
  type BuiltImage,
  type ContentKind,
  GPT_LAST_ATTRS,
  GPT_LAST_NAME,
  type ImageFormat,
  readImagePartitionTable,
  SWAP_LABEL,
  type TableKind,
  tool,
  verifyImage,
} from '../factory/index.js';
import { editFiles, editRaw, overwriteGuestBytes } from '../factory/mutate.js';
import { attachLoop } from '../factory/host.js';
import { scoped } from '../factory/run.js';
import { addPloopSnapshot } from '../helpers/ploop.js';

const MiB = 1024 * 1024;

interface Case {
  format: ImageFormat;
  table: TableKind;
  content: ContentKind;
  preallocated?: boolean;
}

// Every content on both formats; every table kind on both formats; a preallocated image of each format.
const cases: Case[] = [
  { format: 'qcow2', table: 'gpt', content: 'ext4' },
  { format: 'qcow2', table: 'mbr', content: 'ext2' },
  { format: 'qcow2', table: 'logical', content: 'ext3' },
  { format: 'qcow2', table: 'none', content: 'ext4' },
  // A whole-disk NTFS boot sector ends in 55 AA: sfdisk alone would take it for an empty MBR.
  { format: 'qcow2', table: 'none', content: 'ntfs' },
  { format: 'qcow2', table: 'mbr', content: 'ntfs' },
  { format: 'qcow2', table: 'gpt', content: 'btrfs' },
  { format: 'qcow2', table: 'gpt', content: 'xfs' },
  { format: 'qcow2', table: 'logical', content: 'swap' },
  { format: 'qcow2', table: 'gpt', content: 'lvm' },
  { format: 'qcow2', table: 'mbr', content: 'ext4', preallocated: true },
  { format: 'ploop', table: 'gpt', content: 'ext4' },
  { format: 'ploop', table: 'logical', content: 'ext2' },
  { format: 'ploop', table: 'mbr', content: 'ext3' },
  { format: 'ploop', table: 'gpt', content: 'ntfs' },
  { format: 'ploop', table: 'none', content: 'btrfs' },
  { format: 'ploop', table: 'mbr', content: 'xfs' },
  { format: 'ploop', table: 'gpt', content: 'swap' },
  { format: 'ploop', table: 'logical', content: 'lvm' },
  { format: 'ploop', table: 'gpt', content: 'ext4', preallocated: true },
];

let dir: string;
const timings: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-factory-e2e-'));
});

afterAll(async () => {
  console.log(`factory build times:\n${timings.join('\n')}`);
  await rm(dir, { recursive: true, force: true });
});

function small(c: Case, seed: number) {
  return { ...c, dir, sizeMiB: 512, filesMiB: 8, deletedMiB: 8, seed };
}

describe('factory: every combination builds and verifies', () => {
  cases.forEach((c, i) => {
    const title = `${c.format} ${c.table} ${c.content}${c.preallocated === true ? ' preallocated' : ''}`;
    it(title, async () => {
      const built = await buildImage(small(c, 100 + i));
      const t0 = Date.now();
      const report = await verifyImage(built);
      timings.push(`  ${title}: build ${built.buildMs} ms, verify ${Date.now() - t0} ms`);

      expect(report.imageCheck).toBe('clean');
      expect(report.image.virtualSizeBytes).toBe(512 * MiB);
      if (c.preallocated === true) expect(report.image.allocatedClusters).toBe(report.image.totalClusters);
      else expect(report.image.allocatedClusters).toBeLessThan(report.image.totalClusters);

      const partSize = report.partitionSizeBytes!;
      if (c.content === 'swap') {
        expect(report.fsck).toBe('n/a');
        expect(report.swapUuid).toBe(built.swapUuid);
        expect(report.swapLabel).toBe(SWAP_LABEL);
        expect(partSize - report.fsSizeBytes!).toBeLessThan(4096);
      } else {
        expect(report.fsck).toBe('clean');
        expect(report.files).toEqual(built.checksums);
        expect(Object.keys(built.checksums)).toContain('dir one/nested deeper/file with spaces.dat');
        // "The filesystem fills its container": the partition, or for lvm the last LV.
        const container = c.content === 'lvm' ? report.lvSizeBytes! : partSize;
        expect(container - report.fsSizeBytes!).toBeLessThan(MiB);
        if (c.content === 'lvm') expect(partSize - report.pvSizeBytes!).toBeLessThan(4 * MiB);
      }

      checkLayout(built, report.table);
      await rm(built.hdd, { recursive: true, force: true });
    });
  });
});

function checkLayout(built: BuiltImage, table: Awaited<ReturnType<typeof verifyImage>>['table']): void {
  if (built.table === 'none') {
    expect(table).toBeNull();
    expect(built.partitions).toEqual([]);
    return;
  }
  const last = built.partitions.reduce((a, b) => (b.startSector + b.sizeSectors > a.startSector + a.sizeSectors && b.typeId !== '5' ? b : a));
  expect(table!.partitions.length).toBe(built.partitions.length);
  if (built.table === 'gpt') {
    expect(table!.label).toBe('gpt');
    expect(last.name).toBe(GPT_LAST_NAME);
    expect(last.attrs).toBe(GPT_LAST_ATTRS);
    expect(table!.partitions.at(-1)).toMatchObject({ name: GPT_LAST_NAME, attrs: GPT_LAST_ATTRS, uuid: last.uuid });
  } else {
    expect(table!.label).toBe('dos');
    if (built.table === 'mbr') expect(last).toMatchObject({ number: 2, bootable: true });
    else expect(last.number).toBe(6);
  }
}

describe('factory: parallel use', () => {
  it('builds and verifies two images at the same time without interference', async () => {
    const specs = [
      { format: 'qcow2', table: 'gpt', content: 'lvm', seed: 201 },
      { format: 'ploop', table: 'mbr', content: 'ntfs', seed: 202 },
    ] as const;
    const built = await Promise.all(specs.map((s) => buildImage({ ...s, dir, sizeMiB: 256, filesMiB: 8, deletedMiB: 8 })));
    const reports = await Promise.all(built.map((b) => verifyImage(b)));
    reports.forEach((r, i) => expect(r.files).toEqual(built[i]!.checksums));
    // Same folder, different seeds: different contents.
    expect(built[0]!.checksums['one byte.txt']).not.toBe(built[1]!.checksums['one byte.txt']);
  });
});

describe('verifier: proven able to fail', () => {
  let built: BuiltImage;

  beforeAll(async () => {
    built = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, name: 'negative', sizeMiB: 256, filesMiB: 4, deletedMiB: 4, seed: 7 });
    await verifyImage(built);
  });

  it('reports a changed file, naming it', async () => {
    await editFiles(built, async (mnt) => {
      const fh = await open(join(mnt, 'dir one/page plus one.bin'), 'r+');
      await fh.write(Buffer.from([0x42]), 0, 1, 100);
      await fh.close();
    });
    await expect(verifyImage(built)).rejects.toThrow(/file "dir one\/page plus one.bin" has sha256/);
  });

  it('reports a missing file and an unexpected one; allowExtraFiles accepts the extra', async () => {
    await editFiles(built, async (mnt) => {
      await rm(join(mnt, 'one byte.txt'));
      await writeFile(join(mnt, 'extra file'), 'x');
    });
    const error = await verifyImage(built).catch((err: Error) => err);
    expect(String(error)).toMatch(/file "one byte.txt" is missing/);
    expect(String(error)).toMatch(/unexpected file "extra file"/);
    const expected = { ...built.checksums };
    delete expected['one byte.txt'];
    delete expected['dir one/page plus one.bin'];
    await expect(verifyImage(built, { checksums: expected, allowExtraFiles: true })).resolves.toMatchObject({ fsck: 'clean' });
    await expect(verifyImage(built, { checksums: expected })).rejects.toThrow(/unexpected file "extra file"/);
  });

  it('reports changed bytes in another partition', async () => {
    await overwriteGuestBytes(built, 2048 * 512 + 4096, 4096);
    await expect(verifyImage(built, { checksums: null })).rejects.toThrow(/the bytes of partition 1 changed/);
  });

  it('reports a damaged filesystem', async () => {
    // Block group descriptors follow the superblock in the ext4 filesystem's block 1 (4 KiB blocks).
    const start = built.partitions.at(-1)!.startSector * 512;
    await overwriteGuestBytes(built, start + 4096, 8192, 0xff);
    await expect(verifyImage(built, { checksums: null, otherPartitionSums: null })).rejects.toThrow(/ext4 check of \/dev\/loop\d+ failed/);
  });

  it('reports an NTFS volume whose backup boot sector is not its partition\'s last sector (issue 18)', async () => {
    const ntfs = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ntfs', dir, name: 'ntfs-backup', sizeMiB: 64, filesMiB: 1, deletedMiB: 0, seed: 11 });
    const last = ntfs.partitions.at(-1)!;
    await overwriteGuestBytes(ntfs, (last.startSector + last.sizeSectors - 1) * 512, 512, 0);
    const error = verifyImage(ntfs);
    await expect(error).rejects.toThrow(/Checking the alternate boot sector\.\.\. BAD/);
    await expect(error).rejects.toThrow(/the last sector \(\d+\) of the NTFS container is not the backup boot sector/);
  });

  it('reports content that does not fill its partition (fill rule)', async () => {
    const short = await buildImage({ format: 'qcow2', table: 'mbr', content: 'ext4', dir, name: 'short-ext4', sizeMiB: 64, filesMiB: 1, deletedMiB: 0, seed: 12 });
    await editRaw(short, async (raw) => {
      const last = short.partitions.at(-1)!;
      await scoped(async (scope) => {
        const device = await attachLoop(scope, raw, { offsetBytes: last.startSector * 512, sizeBytes: last.sizeSectors * 512 });
        await tool('resize2fs', ['-f', device, `${Math.floor((last.sizeSectors * 512) / 4096) - 256}`]);
      });
    });
    await expect(verifyImage(short)).rejects.toThrow(/the ext filesystem has \d+ blocks of \d+ bytes; its \d+-byte container holds \d+/);
  });

  it('reports a GPT whose backup header is not at the end (disk grown by qemu-img resize alone)', async () => {
    const grown = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext2', dir, name: 'grown', sizeMiB: 64, filesMiB: 1, deletedMiB: 0, seed: 8 });
    await tool('qemu-img', ['resize', '-f', 'qcow2', grown.hdd, '128M']);
    const reading = await readImagePartitionTable(grown);
    expect(reading.problems.join('\n')).toMatch(/sgdisk -v reports problems/);
    await expect(verifyImage(grown)).rejects.toThrow(/sgdisk -v reports problems/);
  });

  it('reports a corrupt ploop container and a descriptor that disagrees with it', async () => {
    const ploop = await buildImage({ format: 'ploop', table: 'mbr', content: 'ext4', dir, name: 'bad-ploop', sizeMiB: 64, filesMiB: 1, deletedMiB: 0, seed: 9 });
    await verifyImage(ploop);
    const xml = join(ploop.hdd, 'DiskDescriptor.xml');
    const original = await readFile(xml, 'utf8');
    await writeFile(xml, original.replace(/<Disk_size>\d+<\/Disk_size>/, '<Disk_size>262144</Disk_size>'));
    await expect(verifyImage(ploop)).rejects.toThrow(/DiskDescriptor.xml says 262144 sectors/);
    await writeFile(xml, original);
    // BAT entry 63 (the last cluster) pointing far beyond the end of the file (docs/interop/parallels.txt: BAT at 64).
    const fh = await open(ploop.dataFile, 'r+');
    const entry = Buffer.alloc(4);
    entry.writeUInt32LE(0x00ffffff);
    await fh.write(entry, 0, 4, 64 + 4 * 63);
    await fh.close();
    await expect(verifyImage(ploop)).rejects.toThrow(/qemu-img check/);
  });

  it('reads a ploop snapshot chain through every delta, and sees a top delta that hides the data', async () => {
    const ploop = await buildImage({ format: 'ploop', table: 'mbr', content: 'ext4', dir, name: 'chain-ploop', sizeMiB: 64, filesMiB: 1, deletedMiB: 0, seed: 10 });
    const { top } = addPloopSnapshot(ploop.hdd, 64, 'base');
    // The top alone holds nothing: passing means the data was read from the base through it.
    await verifyImage(ploop);
    const start = ploop.partitions.at(-1)!.startSector * 512;
    await tool('qemu-io', ['-f', 'parallels', '-c', `write -P 0x5a ${start} 1M`, top]);
    await expect(verifyImage(ploop)).rejects.toThrow(/Bad magic number in super-block/);
  });
});
