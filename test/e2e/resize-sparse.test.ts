// Zeros the appliance writes stay sparse (issue 19): a shrink that moves a never-written ext4 journal (mke2fs
// lazy_journal_init, the journal placed past the new end) must not allocate clusters for the journal's zeros, on
// qcow2 and ploop; a plain (preallocated) image stays fully allocated through the same shrink.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tool } from '../factory/index.js';
import { CLUSTER_SECTORS, DELTA_NAME, DESCRIPTOR, descriptorXml } from '../factory/ploop.js';
import { MiB, resize } from './resize-support.js';

const SIZE_MIB = 512;
/** The journal (64 MiB, never written) starts at 400 MiB; the shrink to 200 MiB must move it. */
const JOURNAL = 'size=64,location=400M';
const TARGET = '200M';
const CLUSTER = 64 * 1024;

let dir: string;
let raw: string;
const files: Record<string, string> = {};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-sparse-'));
  const root = join(dir, 'root');
  await mkdir(root);
  let seed = createHash('sha256').update('resize-sparse').digest();
  for (const [name, mib] of [['a.bin', 6], ['b.bin', 3]] as const) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < mib * 32768; i++) chunks.push((seed = createHash('sha256').update(seed).digest()));
    const data = Buffer.concat(chunks);
    writeFileSync(join(root, name), data);
    files[name] = createHash('sha256').update(data).digest('hex');
  }
  raw = join(dir, 'disk.raw');
  writeFileSync(raw, '');
  await truncate(raw, SIZE_MIB * MiB);
  // No partition table: the filesystem is the disk, so the shrink is resize2fs plus the image's own shrink.
  await tool('mkfs.ext4', ['-F', '-q', '-b', '4096', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', '-J', JOURNAL, '-d', root, raw]);
  const journal = (await tool('debugfs', ['-R', 'stat <8>', raw])).stdout;
  expect(journal).toMatch(/\(0-16383\):102400-118783/);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Allocation {
  /** Bytes of data clusters (qemu-img map). */
  dataBytes: number;
  /** Of those, bytes of clusters that read as all zeros. */
  zeroDataBytes: number;
  /** Every guest byte has a host cluster (a plain image). */
  fullyAllocated: boolean;
}

/** Independent of src/: qemu-img map of the image and the guest bytes of a raw export, cluster by cluster. */
async function allocation(file: string, format: 'qcow2' | 'parallels', exported: string): Promise<Allocation> {
  const map = JSON.parse((await tool('qemu-img', ['map', '--output=json', '-f', format, file])).stdout) as { start: number; length: number; data: boolean; offset?: number }[];
  const fd = openSync(exported, 'r');
  const zeros = Buffer.alloc(CLUSTER);
  const buffer = Buffer.alloc(CLUSTER);
  let dataBytes = 0;
  let zeroDataBytes = 0;
  try {
    for (const extent of map.filter((e) => e.data)) {
      dataBytes += extent.length;
      for (let at = extent.start; at < extent.start + extent.length; at += CLUSTER) {
        const n = readSync(fd, buffer, 0, CLUSTER, at);
        if (n === CLUSTER && buffer.equals(zeros)) zeroDataBytes += CLUSTER;
      }
    }
  } finally {
    closeSync(fd);
  }
  return { dataBytes, zeroDataBytes, fullyAllocated: map.every((e) => e.offset !== undefined) };
}

/** fsck -fn clean and every file identical, read from a raw export by debugfs. */
async function verifyContent(exported: string): Promise<void> {
  await tool('e2fsck', ['-fn', exported]);
  for (const [name, sum] of Object.entries(files)) {
    const out = join(dir, `out-${name}`);
    await tool('debugfs', ['-R', `dump /${name} ${out}`, exported]);
    expect(createHash('sha256').update(readFileSync(out)).digest('hex'), name).toBe(sum);
    await rm(out);
  }
}

async function exportRaw(file: string, format: 'qcow2' | 'parallels'): Promise<string> {
  const exported = join(dir, 'export.raw');
  await rm(exported, { force: true });
  await tool('qemu-img', ['convert', '-f', format, '-O', 'raw', file, exported]);
  return exported;
}

/**
 * Shrinks `hdd` (whose data file is `file`) to TARGET and checks that the shrink added no all-zero data cluster
 * (without the zero rule the moved journal lands as 64 MiB of them) and nothing beyond a few MiB of metadata.
 */
async function shrinkAddsNoZeros(hdd: string, file: string, format: 'qcow2' | 'parallels'): Promise<string> {
  const before = await allocation(file, format, raw);
  const shrunk = await resize(hdd, TARGET, '--resize_partition');
  expect(shrunk.code, shrunk.stderr).toBe(0);
  const exported = await exportRaw(file, format);
  const after = await allocation(file, format, exported);
  expect(after.zeroDataBytes, JSON.stringify({ before, after })).toBeLessThanOrEqual(before.zeroDataBytes);
  expect(after.dataBytes).toBeLessThan(before.dataBytes + 8 * MiB);
  return exported;
}

describe('a shrink that moves a never-written journal does not allocate its zeros', () => {
  it('qcow2 (sparse): no all-zero data cluster appears, files identical, fsck clean', async () => {
    const hdd = join(dir, 'sparse.qcow2');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, hdd]);
    const exported = await shrinkAddsNoZeros(hdd, hdd, 'qcow2');
    await tool('qemu-img', ['check', '-f', 'qcow2', hdd]);
    await verifyContent(exported);
  });

  it('qcow2 (plain): stays fully allocated through the same shrink', async () => {
    const hdd = join(dir, 'plain.qcow2');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'preallocation=falloc', raw, hdd]);
    expect((await allocation(hdd, 'qcow2', raw)).fullyAllocated).toBe(true);
    const shrunk = await resize(hdd, TARGET, '--resize_partition');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    const exported = await exportRaw(hdd, 'qcow2');
    const after = await allocation(hdd, 'qcow2', exported);
    expect(after.fullyAllocated).toBe(true);
    expect(statSync(hdd).blocks * 512).toBeGreaterThanOrEqual(200 * MiB);
    await verifyContent(exported);
  });

  it('ploop (expanding): no all-zero cluster stays allocated, files identical, fsck clean', async () => {
    const folder = join(dir, 'ploop');
    await mkdir(folder);
    const delta = join(folder, DELTA_NAME);
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', '-o', `cluster_size=${CLUSTER_SECTORS * 512}`, raw, delta]);
    writeFileSync(join(folder, DESCRIPTOR), descriptorXml(SIZE_MIB * 2048, false));
    const exported = await shrinkAddsNoZeros(folder, delta, 'parallels');
    await verifyContent(exported);
  });
});
