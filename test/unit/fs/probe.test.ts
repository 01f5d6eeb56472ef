// Native superblock probes against filesystems made by the real mkfs tools, and the native swap re-make checked
// by blkid/swaplabel (UUID and label kept, size changed).
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { identify, PROBE_BYTES } from '../../../src/fs/registry.js';
import { swapHeader } from '../../../src/fs/swap.js';

const work = mkdtempSync(join(tmpdir(), 'prl-fs-unit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const MiB = 1024 * 1024;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { env: { ...process.env, LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}

function blankFile(name: string, sizeMiB: number): string {
  const path = join(work, name);
  writeFileSync(path, '');
  truncateSync(path, sizeMiB * MiB);
  return path;
}

function head(path: string): Buffer {
  const buffer = Buffer.alloc(PROBE_BYTES);
  const fd = openSync(path, 'r');
  readSync(fd, buffer, 0, PROBE_BYTES, 0);
  closeSync(fd);
  return buffer;
}

const cases: [string, number, string, string[], number][] = [
  ['ext2', 64, 'mkfs.ext2', ['-q', '-F'], 64 * MiB],
  ['ext3', 64, 'mkfs.ext3', ['-q', '-F'], 64 * MiB],
  ['ext4', 64, 'mkfs.ext4', ['-q', '-F'], 64 * MiB],
  ['xfs', 320, 'mkfs.xfs', ['-q', '-f'], 320 * MiB],
  ['btrfs', 160, 'mkfs.btrfs', ['-q', '-f'], 160 * MiB],
  ['ntfs', 64, 'mkntfs', ['-q', '-F', '-Q'], 64 * MiB],
  ['swap', 32, 'mkswap', ['-q'], 32 * MiB],
];

describe('identify', () => {
  it.each(cases)('%s made by the real mkfs is recognised with its size', (type, sizeMiB, mkfs, args, expected) => {
    const path = blankFile(`${type}.img`, sizeMiB);
    sh(mkfs, [...args, path]);
    const found = identify(head(path));
    expect(found?.fs.type).toBe(type);
    // NTFS counts its backup boot sector, which mkntfs puts in the last sector; others span the file exactly.
    expect(found!.probe.sizeBytes).toBe(expected);
    expect(found!.probe.damaged).toBeUndefined();
  });

  it('finds nothing on zeros', () => {
    expect(identify(Buffer.alloc(PROBE_BYTES))).toBeUndefined();
  });

  it('reports an ext filesystem with recorded errors as damaged', () => {
    const path = blankFile('bad-ext4.img', 32);
    sh('mkfs.ext4', ['-q', '-F', path]);
    const bytes = head(path);
    bytes.writeUInt16LE(2, 1024 + 0x3a);
    expect(identify(bytes)?.probe.damaged).toMatch(/recorded errors; run e2fsck -f/);
  });
});

describe('swapHeader', () => {
  it('re-makes a swap area for a new size with the same UUID and label', () => {
    const path = blankFile('swap-grow.img', 16);
    sh('mkswap', ['-q', '-U', '0d0a3e4c-1111-4222-8333-444455556666', '-L', 'myswap', path]);
    truncateSync(path, 48 * MiB);
    const page = swapHeader(head(path), 48 * MiB);
    const fd = openSync(path, 'r+');
    writeSync(fd, page, 0, page.length, 0);
    closeSync(fd);
    expect(identify(head(path))?.probe.sizeBytes).toBe(48 * MiB);
    expect(sh('swaplabel', [path])).toMatch(/LABEL: myswap\s+UUID:\s+0d0a3e4c-1111-4222-8333-444455556666/);
  });
});
