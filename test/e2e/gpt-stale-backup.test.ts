// After a grow, the backup GPT header must live only at the new last sector: the former last sector, where the old
// backup header was, must no longer hold a valid "EFI PART" header (a tool that scans for it, or a later shrink back,
// would find a stale table), and sgdisk -v on a raw export must be clean (issue 17 item 3). The disk is made with
// sgdisk on a raw file and converted to qcow2; resize --size without --resize_partition needs no appliance.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo } from '../helpers/images.js';
import { cli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';

const { fresh: freshDir } = caseFolders('prl-gpt-backup-');
const SECTOR = 512;
const MiB = 1024 * 1024;

function sector(raw: string, lba: number): Buffer {
  const fd = openSync(raw, 'r');
  try {
    const buffer = Buffer.alloc(SECTOR);
    expect(readSync(fd, buffer, 0, SECTOR, lba * SECTOR)).toBe(SECTOR);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/** A GPT header by the UEFI rules: signature, header CRC over HeaderSize bytes with the CRC field zeroed, MyLBA. */
function validHeaderAt(raw: string, lba: number): boolean {
  const header = sector(raw, lba);
  if (header.toString('latin1', 0, 8) !== 'EFI PART') return false;
  const size = header.readUInt32LE(12);
  if (size < 92 || size > SECTOR) return false;
  const copy = Buffer.from(header.subarray(0, size));
  copy.writeUInt32LE(0, 16);
  return crc32(copy) === header.readUInt32LE(16) && Number(header.readBigUInt64LE(24)) === lba;
}

function rawExport(image: string, dir: string): string {
  const raw = join(dir, 'export.raw');
  qemuImg('convert', '-U', '-f', 'qcow2', '-O', 'raw', image, raw);
  return raw;
}

function sgdisk(...args: string[]): string {
  const result = spawnSync('sgdisk', args, { encoding: 'utf8' });
  expect(result.status, `sgdisk ${args.join(' ')}: ${result.stdout}${result.stderr}`).toBe(0);
  return result.stdout;
}

describe('the old backup GPT header after a grow', () => {
  it.each([
    ['expanding', ''],
    ['plain', 'preallocation=full'],
  ])('%s qcow2: cleared at the former last sector, valid at the new one, sgdisk -v clean', async (_kind, options) => {
    const dir = freshDir();
    const made = join(dir, 'made.raw');
    qemuImg('create', '-q', '-f', 'raw', made, '64M');
    sgdisk('-o', '-n', '1:2048:+32M', '-t', '1:8300', made);
    const oldLast = (64 * MiB) / SECTOR - 1;
    expect(validHeaderAt(made, oldLast), 'sgdisk wrote no backup header at the end').toBe(true);
    const image = join(dir, 'vm.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', ...(options ? ['-o', options] : []), made, image);
    qemuIo(image, 'write -P 0x5a 1M 8M');

    const grown = await cli('resize', '--hdd', image, '--size', '96M', '--json');
    expect(grown.status, grown.stderr).toBe(0);

    const raw = rawExport(image, dir);
    const newLast = (96 * MiB) / SECTOR - 1;
    expect(validHeaderAt(raw, 1), 'primary header').toBe(true);
    expect(Number(sector(raw, 1).readBigUInt64LE(32)), 'primary AlternateLBA').toBe(newLast);
    expect(validHeaderAt(raw, newLast), 'backup header at the new last sector').toBe(true);
    expect(sector(raw, oldLast).toString('latin1', 0, 8), 'stale backup at the former last sector').not.toBe('EFI PART');
    expect(validHeaderAt(raw, oldLast)).toBe(false);
    const verify = sgdisk('-v', raw);
    expect(verify).toMatch(/No problems found/);
    expect(verify).not.toMatch(/Problem:|Warning|Caution|Identified/);
    // The partition is where it was: no --resize_partition.
    expect(sgdisk('-i', '1', raw)).toMatch(/Last sector: 67583 /);
  });
});
