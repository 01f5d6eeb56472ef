// The native qcow2 reader against QEMU's own reading (qemu-img convert to raw) on images qemu-img and qemu-io
// made: cluster sizes, extended L2, compressed clusters, compat 0.10, backing chains with zero clusters,
// discards, sub-cluster writes, a raw base and a base shorter than its overlay. zstd is refused, not guessed.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readGuestNatively } from '../../../src/formats/native-read.js';
import { closePloopImage, guestReaderOf, openPloopImage } from '../../../src/formats/ploop/image.js';
import { NotReadNatively } from '../../../src/formats/guest-reader.js';
import { caseFolders } from '../../helpers/dirs.js';
import { qemuIo as io } from '../../helpers/images.js';
import { ROOT_PARENT, TOP_GUID, descriptorXml } from '../../helpers/ploop.js';
import { settleDelta } from '../../helpers/real-ploop-exec.js';

const { fresh } = caseFolders('qcow2-reader-');
const SIZE = 24 * 1024 * 1024;

function create(file: string, options: string, size = '24M', backing?: { file: string; format: string }): void {
  const args = ['create', '-q', '-f', 'qcow2', '-o', options];
  if (backing) args.push('-b', backing.file, '-F', backing.format);
  execFileSync('qemu-img', [...args, file, ...(backing ? [] : [size])]);
}

/** Writes spread over the disk: whole clusters, sub-cluster pieces, unaligned runs, a zeroed and a discarded run. */
function scatter(file: string, seed: number): void {
  io(
    file,
    `write -P ${seed} 0 1M`,
    `write -P ${seed + 1} 1536K 3K`,
    `write -P ${seed + 2} 3000000 70000`,
    `write -P ${seed + 3} 8M 2M`,
    `write -z 8704K 256K`,
    `discard 9M 128K`,
    `write -P ${seed + 4} 20M 4096`,
    `write -P ${seed + 5} 24575K 1K`,
  );
}

function expectSameAsQemu(file: string, format: 'qcow2' | 'parallels' = 'qcow2', read = (offset: number, length: number) => readGuestNatively(file, format, offset, length)): void {
  const raw = `${file}.raw`;
  execFileSync('qemu-img', ['convert', '-f', format, '-O', 'raw', file, raw]);
  const expected = readFileSync(raw);
  const native = read(0, expected.length);
  expect(native.equals(expected)).toBe(true);
  // Unaligned reads that cross cluster boundaries and the disk's end (zeros past it).
  for (const [offset, length] of [[1535 * 1024 + 7, 9000], [2999990, 70020], [SIZE - 1000, 3000]] as const) {
    const piece = read(offset, length);
    const want = Buffer.alloc(length);
    expected.copy(want, 0, offset, Math.min(expected.length, offset + length));
    expect(piece.equals(want)).toBe(true);
  }
}

describe('native qcow2 reader', () => {
  for (const options of ['cluster_size=4096', 'cluster_size=65536', 'cluster_size=2097152', 'cluster_size=65536,extended_l2=on', 'cluster_size=32768,extended_l2=on', 'compat=0.10,cluster_size=65536']) {
    it(`reads what QEMU reads (${options})`, () => {
      const file = join(fresh(), 'disk.qcow2');
      create(file, options);
      scatter(file, 10);
      expectSameAsQemu(file);
    });
  }

  for (const options of ['cluster_size=65536', 'cluster_size=65536,extended_l2=on', 'cluster_size=4096']) {
    it(`inflates compressed clusters (${options})`, () => {
      const dir = fresh();
      const plain = join(dir, 'plain.qcow2');
      create(plain, 'cluster_size=65536');
      scatter(plain, 40);
      const file = join(dir, 'compressed.qcow2');
      execFileSync('qemu-img', ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', options, plain, file]);
      io(file, 'write -P 99 8M 64K'); // a rewritten compressed cluster becomes a plain one
      expectSameAsQemu(file);
    });
  }

  it('refuses zstd-compressed clusters rather than guessing', () => {
    const dir = fresh();
    const plain = join(dir, 'plain.qcow2');
    create(plain, 'cluster_size=65536');
    scatter(plain, 50);
    const file = join(dir, 'zstd.qcow2');
    execFileSync('qemu-img', ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', 'compression_type=zstd', plain, file]);
    expect(() => readGuestNatively(file, 'qcow2', 0, 1024 * 1024)).toThrow(NotReadNatively);
  });

  for (const options of ['cluster_size=65536', 'cluster_size=65536,extended_l2=on', 'cluster_size=4096']) {
    it(`reads through a backing chain with zero clusters, discards and sub-cluster writes (${options})`, () => {
      const dir = fresh();
      const base = join(dir, 'base.qcow2');
      create(base, 'cluster_size=65536');
      scatter(base, 60);
      const middle = join(dir, 'middle.qcow2');
      create(middle, options, undefined, { file: 'base.qcow2', format: 'qcow2' });
      io(middle, 'write -z 0 512K', 'write -P 70 600K 5K', 'discard 8M 64K', 'write -P 71 8800K 2K');
      const top = join(dir, 'top.qcow2');
      create(top, options, undefined, { file: 'middle.qcow2', format: 'qcow2' });
      io(top, 'write -P 80 4K 1K', 'write -z 8192K 4K', 'write -P 81 20M 8K');
      expectSameAsQemu(top);
    });
  }

  it('leaves a zero flag in a version 2 image (corruption to QEMU) to qemu-io', () => {
    const file = join(fresh(), 'v2.qcow2');
    create(file, 'compat=0.10,cluster_size=65536', '4M');
    io(file, 'write -P 7 0 128K');
    const bytes = readFileSync(file);
    const l2 = Number(bytes.readBigUInt64BE(Number(bytes.readBigUInt64BE(40))) & 0x00fffffffffffe00n);
    bytes.writeBigUInt64BE(bytes.readBigUInt64BE(l2) | 1n, l2);
    writeFileSync(file, bytes);
    expect(() => readGuestNatively(file, 'qcow2', 0, 4096)).toThrow(NotReadNatively);
  });

  it('reads a raw base and zeros past a base shorter than its overlay', () => {
    const dir = fresh();
    const base = join(dir, 'base.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', base, '5M']);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 5 0 5M', base], { stdio: 'ignore' });
    const top = join(dir, 'top.qcow2');
    create(top, 'cluster_size=65536', undefined, { file: 'base.raw', format: 'raw' });
    execFileSync('qemu-img', ['resize', '-q', top, '24M']);
    io(top, 'write -P 6 4M 2M');
    expectSameAsQemu(top);
  });

  it('reads a ploop image through its BAT', () => {
    const dir = fresh();
    const delta = join(dir, 'root.hds');
    execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, '24M']);
    execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 7 0 1500K', '-c', 'write -P 8 9M 3K', '-c', 'write -P 9 24575K 1K', delta], { stdio: 'ignore' });
    settleDelta(delta);
    writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: SIZE / 512, blockSizeSectors: 2048, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }));
    const image = openPloopImage(dir);
    try {
      const reader = guestReaderOf(image);
      expectSameAsQemu(delta, 'parallels', (offset, length) => reader.read(offset, length));
    } finally {
      closePloopImage(image);
    }
  });
});
