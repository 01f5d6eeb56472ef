// Crafted ext superblocks and group descriptors (the guest writes these bytes): the native reading answers
// "uncertain" (the appliance then measures) or a number no larger than the filesystem, never throws, never hangs,
// and never reads outside its container (the reader below fails the test on any such read).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readExtLayout } from '../../../src/fs/ext-layout.js';
import { extMinimumBlocks } from '../../../src/fs/ext-minimum.js';
import type { ContainerReader } from '../../../src/fs/types.js';
import { caseFolders } from '../../helpers/dirs.js';

const { fresh } = caseFolders('ext-hostile-');
const SB = 1024;
let plain: Buffer;
let checksummed: Buffer;

function mkfs(options: string[]): Buffer {
  const image = join(fresh(), 'fs.img');
  execFileSync('truncate', ['-s', '64M', image]);
  execFileSync('mke2fs', ['-F', '-q', '-t', 'ext4', '-b', '4096', '-E', 'lazy_itable_init=1,nodiscard', ...options, image], { stdio: 'ignore' });
  return readFileSync(image);
}

beforeAll(() => {
  plain = mkfs(['-O', '^metadata_csum,uninit_bg']);
  checksummed = mkfs([]);
});

/** A container over `bytes` that records every read and fails the test on one outside it. */
function container(bytes: Buffer): ContainerReader & { outside: string[] } {
  const outside: string[] = [];
  return {
    outside,
    sizeBytes: bytes.length,
    async read(offset, length) {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > bytes.length) {
        outside.push(`${length} bytes at ${offset}`);
        throw new Error('read outside the container');
      }
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
  };
}

type Poke = (b: Buffer) => void;
const u32 = (at: number, value: number): Poke => (b) => b.writeUInt32LE(value >>> 0, at);
const u16 = (at: number, value: number): Poke => (b) => b.writeUInt16LE(value, at);
const u8 = (at: number, value: number): Poke => (b) => b.writeUInt8(value, at);
/** Group descriptors start at block 1 (4 KiB blocks); 64-byte descriptors (64bit is on by default). */
const desc = (group: number, field: number, value: number): Poke => u32(4096 + group * 64 + field, value);

async function judge(bytes: Buffer): Promise<{ uncertain?: string; blocks?: number }> {
  const reader = container(bytes);
  const started = Date.now();
  const decoded = await readExtLayout(reader);
  const result = 'uncertain' in decoded ? decoded : extMinimumBlocks(decoded.layout);
  expect(reader.outside).toEqual([]);
  expect(Date.now() - started).toBeLessThan(5000);
  if ('blocks' in result) {
    expect(Number.isSafeInteger(result.blocks)).toBe(true);
    expect(result.blocks).toBeLessThanOrEqual(bytes.length / 4096);
  }
  return result;
}

const UNCERTAIN: [string, Poke[]][] = [
  ['s_log_block_size absurd', [u32(SB + 0x18, 0xffffffff)]],
  ['s_log_block_size 7 (128 KiB blocks)', [u32(SB + 0x18, 7), u32(SB + 0x1c, 7)]],
  ['blocks count past the partition', [u32(SB + 0x4, 0xffffffff)]],
  ['blocks count past the partition (64-bit high word)', [u32(SB + 0x150, 0xffff)]],
  ['blocks per group 0', [u32(SB + 0x20, 0), u32(SB + 0x24, 0)]],
  ['blocks per group 8 (millions of groups)', [u32(SB + 0x20, 8), u32(SB + 0x24, 8)]],
  ['inodes per group huge', [u32(SB + 0x28, 0xfffffff0)]],
  ['inodes per group 0', [u32(SB + 0x28, 0)]],
  ['free inodes above the inode count', [u32(SB + 0x10, 0xffffffff)]],
  ['first data block past the end', [u32(SB + 0x14, 0xfffffff0)]],
  ['meta_bg with s_first_meta_bg past the descriptors', [u32(SB + 0x60, 0x2c2 | 0x10), u32(SB + 0x104, 0xffffffff)]],
  ['meta_bg whose descriptor blocks lie past the end', [u32(SB + 0x60, 0x2c2 | 0x10), u32(SB + 0x104, 0), u32(SB + 0x20, 0x7ff8 * 8), u32(SB + 0x24, 0x7ff8 * 8)]],
  ['descriptor size 3', [u16(SB + 0xfe, 3)]],
  ['inode size 0', [u16(SB + 0x58, 0)]],
  ['unknown incompatible feature', [u32(SB + 0x60, 0x2c2 | 0x800000)]],
  ['journal device', [u32(SB + 0x60, 0x2c2 | 0x8)]],
  ['journal needs recovery', [u32(SB + 0x60, 0x2c2 | 0x4)]],
  ['errors recorded', [u16(SB + 0x3a, 3)]],
  ['revision 7', [u32(SB + 0x4c, 7)]],
  ['cluster size without bigalloc', [u32(SB + 0x1c, 4)]],
  ['log groups per flex 200', [u8(SB + 0x174, 200)]],
];

const ANSWERED: [string, Poke[], (blocks: number, total: number) => void][] = [
  ['every group claims 0xffff free blocks', [desc(0, 0xc, 0xffff), desc(1, 0xc, 0xffff)], (blocks, total) => expect(blocks).toBe(total)],
  ['the first group\'s inode table at block 2^40', [desc(0, 0x8, 0), desc(0, 0x28, 0x100)], (blocks, total) => expect(blocks).toBe(total)],
  ['flex groups of 2^31', [u8(SB + 0x174, 31)], (blocks, total) => expect(blocks).toBeLessThanOrEqual(total)],
];

describe('hostile ext metadata read natively', () => {
  it('the unmodified filesystems are read with certainty', async () => {
    expect((await judge(plain)).blocks).toBeGreaterThan(0);
    expect((await judge(checksummed)).blocks).toBeGreaterThan(0);
  });

  for (const [name, pokes] of UNCERTAIN) {
    it(`${name}: uncertain`, async () => {
      const bytes = Buffer.from(plain);
      for (const poke of pokes) poke(bytes);
      expect((await judge(bytes)).uncertain).toBeTruthy();
    });
  }

  for (const [name, pokes, check] of ANSWERED) {
    it(`${name}: a bounded answer`, async () => {
      const bytes = Buffer.from(plain);
      for (const poke of pokes) poke(bytes);
      const result = await judge(bytes);
      expect(result.blocks, result.uncertain).toBeDefined();
      check(result.blocks!, bytes.length / 4096);
    });
  }

  it('a filesystem that claims more blocks than its partition holds: uncertain', async () => {
    expect((await judge(Buffer.from(plain.subarray(0, 32 * 1024 * 1024)))).uncertain).toMatch(/larger than its container/);
  });

  it('a superblock whose metadata_csum does not match: uncertain', async () => {
    const bytes = Buffer.from(checksummed);
    u32(SB + 0x10, bytes.readUInt32LE(SB + 0x10) - 1)(bytes);
    expect((await judge(bytes)).uncertain).toMatch(/checksum/);
  });
});
