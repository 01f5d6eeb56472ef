// The MBR entry codec and the layout arithmetic, table-driven: CHS as every tool encodes it (255 heads, 63 sectors,
// cylinder bits 8-9 in the sector byte), the entries a sector holds, and the smallest disks a layout allows.
import { describe, expect, it } from 'vitest';
import { chsBytes, decodeMbrEntries, hasBootSignature, MAX_MBR_SECTORS, withEntrySectors } from '../../../src/partitions/mbr.js';
import {
  lastUsableSector,
  minimumKeepingLayout,
  minimumResizingLast,
  roundUpToMiB,
  tailSectors,
  targetEndSector,
} from '../../../src/partitions/layout.js';
import type { GptHeader } from '../../../src/partitions/gpt.js';
import { part } from './part.js';
import type { Partition, PartitionTable } from '../../../src/partitions/table.js';

const MiB = 1024 * 1024;

/** One 16-byte entry written at its slot, as fdisk lays it out (status, CHS, type, CHS, LBA, count). */
function entry(sector: Buffer, slot: number, fields: { status?: number; type: number; lba: number; sectors: number }): void {
  const at = 446 + 16 * slot;
  sector[at] = fields.status ?? 0;
  sector[at + 4] = fields.type;
  sector.writeUInt32LE(fields.lba, at + 8);
  sector.writeUInt32LE(fields.sectors, at + 12);
}

describe('chsBytes', () => {
  // [head, sector | (cylinder >> 8) << 6, cylinder & 0xff]
  it.each([
    [0, [0, 1, 0]],
    [62, [0, 63, 0]],
    [63, [1, 1, 0]],
    [2048, [32, 33, 0]],
    [16064, [254, 63, 0]],
    [16065, [0, 1, 1]],
    [300 * 16065, [0, 0x41, 44]],
    [1023 * 16065 + 254 * 63 + 62, [254, 0xff, 0xff]],
    [1024 * 16065, [0xfe, 0xff, 0xff]],
    [MAX_MBR_SECTORS, [0xfe, 0xff, 0xff]],
  ])('LBA %d', (lba, bytes) => expect([...chsBytes(lba)]).toEqual(bytes));
});

describe('hasBootSignature', () => {
  const signed = (length: number): Buffer => {
    const sector = Buffer.alloc(length);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    return sector;
  };
  it.each([
    ['a 512-byte sector ending in 55 AA', signed(512), true],
    ['a longer buffer with the signature at 510', signed(4096), true],
    ['55 only', Buffer.from(signed(512).fill(0, 511)), false],
    ['AA only', Buffer.from(signed(512).fill(0, 510, 511)), false],
    ['the bytes swapped', Buffer.from(signed(512)).fill(0xaa, 510, 511).fill(0x55, 511), false],
    ['a short buffer', signed(512).subarray(0, 511), false],
  ])('%s', (_name, sector, expected) => expect(hasBootSignature(sector)).toBe(expected));
});

describe('decodeMbrEntries', () => {
  it('returns the used slots with their fields, skipping a zero type or a zero size', () => {
    const sector = Buffer.alloc(512);
    entry(sector, 0, { status: 0x80, type: 0x83, lba: 2048, sectors: 16384 });
    entry(sector, 1, { type: 0, lba: 18432, sectors: 100 });
    entry(sector, 2, { type: 0x07, lba: 18432, sectors: 0 });
    entry(sector, 3, { status: 0x81, type: 0x05, lba: 0xfffffff0, sectors: 0xffffffff });
    expect(decodeMbrEntries(sector)).toEqual([
      { slot: 0, bootable: true, type: 0x83, lbaStart: 2048, sectors: 16384 },
      { slot: 3, bootable: false, type: 0x05, lbaStart: 0xfffffff0, sectors: 0xffffffff },
    ]);
  });
});

describe('withEntrySectors', () => {
  it('changes the size and CHS end of one slot and keeps every other byte', () => {
    const sector = Buffer.alloc(600, 0x5a);
    entry(sector, 1, { status: 0x80, type: 0x83, lba: 2048, sectors: 100 });
    const out = withEntrySectors(sector, 1, 20480, 2048);
    expect(out.length).toBe(512);
    const at = 446 + 16;
    expect(out.readUInt32LE(at + 12)).toBe(20480);
    expect([...out.subarray(at + 5, at + 8)]).toEqual([...chsBytes(2048 + 20480 - 1)]);
    const expected = Buffer.from(sector.subarray(0, 512));
    expected.writeUInt32LE(20480, at + 12);
    chsBytes(22527).copy(expected, at + 5);
    expect(out.equals(expected)).toBe(true);
    expect(sector.readUInt32LE(at + 12)).toBe(100);
  });
});

function gptTable(diskSectors: number, partitions: Partition[], entryCount = 128): PartitionTable {
  const primary = { entryCount, entrySize: 128 } as GptHeader;
  return { kind: 'gpt', diskSectors, mbr: Buffer.alloc(512), primary, array: Buffer.alloc(0), partitions };
}
const mbrTable = (diskSectors: number, partitions: Partition[]): PartitionTable => ({ kind: 'mbr', diskSectors, sectors: new Map(), partitions });

describe('layout arithmetic', () => {
  const disk = 128 * 2048;
  it.each([
    ['a GPT of 128 entries keeps 32 + 1 sectors at the end', gptTable(disk, []), 33, disk - 34],
    ['a GPT of 4 entries keeps 1 + 1', gptTable(disk, [], 4), 2, disk - 3],
    ['an MBR keeps nothing', mbrTable(disk, []), 0, disk - 1],
    ['no table keeps nothing', { kind: 'none', diskSectors: disk } as PartitionTable, 0, disk - 1],
  ])('%s', (_name, table, tail, lastUsable) => {
    expect(tailSectors(table)).toBe(tail);
    expect(lastUsableSector(table, disk)).toBe(lastUsable);
  });

  it('targetEndSector: the last usable sector, or for MBR the 2^32 - 1 sectors a size field holds', () => {
    const last = part(2, 2048, 4095);
    expect(targetEndSector(mbrTable(disk, [last]), last, disk)).toBe(disk - 1);
    expect(targetEndSector(gptTable(disk, [last]), last, disk)).toBe(disk - 34);
    // Exactly 2^32 - 1 sectors fit; one more and the end stops there. A GPT has no such limit.
    expect(targetEndSector(mbrTable(0, [last]), last, 2048 + MAX_MBR_SECTORS)).toBe(2048 + MAX_MBR_SECTORS - 1);
    expect(targetEndSector(mbrTable(0, [last]), last, 2048 + MAX_MBR_SECTORS + 1)).toBe(2048 + MAX_MBR_SECTORS - 1);
    expect(targetEndSector(mbrTable(0, [last]), last, 2048 + MAX_MBR_SECTORS + 10)).toBe(2048 + MAX_MBR_SECTORS - 1);
    expect(targetEndSector(gptTable(0, [last]), last, 2048 + MAX_MBR_SECTORS + 10)).toBe(2048 + MAX_MBR_SECTORS + 10 - 34);
  });

  it.each([
    [0, 0],
    [1, MiB],
    [MiB, MiB],
    [MiB + 1, 2 * MiB],
  ])('roundUpToMiB(%d) = %d', (bytes, rounded) => expect(roundUpToMiB(bytes)).toBe(rounded));

  it.each([
    ['no table: the content, at least 1 MiB', { kind: 'none', diskSectors: disk } as PartitionTable, 5 * MiB + 1, 6 * MiB],
    ['no table, tiny content', { kind: 'none', diskSectors: disk } as PartitionTable, 10, MiB],
    // Ends at sector 40959 (20 MiB): the backup GPT's 33 sectors push it into the 21st MiB.
    ['GPT: the last end plus the backup', gptTable(disk, [part(1, 2048, 40959 - 33)]), 0, 20 * MiB],
    ['GPT: one sector more needs another MiB', gptTable(disk, [part(1, 2048, 40959 - 32)]), 0, 21 * MiB],
    ['MBR: the extended container counts', mbrTable(disk, [part(1, 2048, 4095), part(2, 4096, 40959, 'extended'), part(5, 6144, 8191, 'logical')]), 0, 20 * MiB],
    ['MBR ending one sector into a MiB', mbrTable(disk, [part(1, 2048, 40960)]), 0, 21 * MiB],
  ])('minimumKeepingLayout, %s', (_name, table, content, bytes) => expect(minimumKeepingLayout(table, content)).toBe(bytes));

  it.each([
    ['no table: the content, at least 1 MiB', { kind: 'none', diskSectors: disk } as PartitionTable, 3 * MiB + 1, 4 * MiB],
    ['no table, tiny content', { kind: 'none', diskSectors: disk } as PartitionTable, 10, MiB],
    ['an empty MBR: no partition to resize, nothing to keep', mbrTable(disk, []), 5 * MiB, 0],
    // The last partition starts at 1 MiB: 8 MiB of content ends at 9 MiB.
    ['MBR: start plus content', mbrTable(disk, [part(1, 2048, 100000)]), 8 * MiB, 9 * MiB],
    ['MBR: content not a whole sector rounds up', mbrTable(disk, [part(1, 2048, 100000)]), 8 * MiB + 1, 10 * MiB],
    ['GPT: start plus content plus backup', gptTable(disk, [part(1, 2048, 100000)]), 8 * MiB, 10 * MiB],
    ['GPT: exactly fitting before the backup', gptTable(disk, [part(1, 2048, 100000)]), 8 * MiB - 33 * 512, 9 * MiB],
    // An earlier partition ending past the content's end keeps its place; the extended container does not count.
    [
      'an earlier partition ends later than the content',
      mbrTable(disk, [part(1, 2048, 40959), part(2, 4096, 200000, 'extended'), part(5, 6144, 300000, 'logical')]),
      MiB,
      20 * MiB,
    ],
    [
      'the content passes the other partitions',
      mbrTable(disk, [part(1, 2048, 40959), part(5, 6144, 300000, 'logical')]),
      20 * MiB,
      23 * MiB,
    ],
  ])('minimumResizingLast, %s', (_name, table, content, bytes) => expect(minimumResizingLast(table, content)).toBe(bytes));
});
