// The no-cut rule's proof and the sizes it names, table-driven on hand-made tables: which byte ranges each kind of
// table keeps (sector 0, the partitions, the GPT header and arrays), and how the smallest size is spelled.
import { describe, expect, it } from 'vitest';
import { formatExactSize, proofOf, smallestSizeText } from '../../src/commands/resize/minimum.js';
import type { Identified } from '../../src/fs/registry.js';
import type { GptHeader } from '../../src/partitions/gpt.js';
import { part } from './partitions/part.js';
import type { PartitionTable } from '../../src/partitions/table.js';

const K = 1024;
const M = 1024 * K;
const sectors = (first: number, count: number) => ({ start: first * 512, length: count * 512 });

describe('proofOf', () => {
  const ext4 = { probe: { type: 'ext4', sizeBytes: 40 * M } } as Identified;
  it('without a table: nothing, or the filesystem at the start up to its own size', () => {
    const none: PartitionTable = { kind: 'none', diskSectors: 2048 * 64 };
    expect(proofOf(none, undefined, 'as-is')).toEqual({ kind: 'nothing' });
    expect(proofOf(none, ext4, 'rewritten')).toEqual({ kind: 'filesystem', endBytes: 40 * M });
  });

  it('MBR: sector 0 and every partition, the extended container included', () => {
    const table: PartitionTable = {
      kind: 'mbr',
      diskSectors: 2048 * 64,
      sectors: new Map(),
      partitions: [part(1, 2048, 4095), part(2, 4096, 100000, 'extended'), part(5, 6144, 100000, 'logical')],
    };
    const expected = { kind: 'table', holds: [sectors(0, 1), sectors(2048, 2048), sectors(4096, 95905), sectors(6144, 93857)] };
    expect(proofOf(table, undefined, 'as-is')).toEqual(expected);
    expect(proofOf(table, ext4, 'rewritten')).toEqual(expected);
  });

  it('GPT: also the primary header and entries; the backup only at the cut', () => {
    // 16 entries of 128 bytes: 4 sectors; the backup entries end just before the backup header.
    const primary = { entryCount: 16, entrySize: 128, entriesLba: 2, alternateLba: 131071 } as GptHeader;
    const table: PartitionTable = { kind: 'gpt', diskSectors: 131072, mbr: Buffer.alloc(512), primary, array: Buffer.alloc(0), partitions: [part(1, 2048, 4095)] };
    const planned = [sectors(0, 1), sectors(2048, 2048), sectors(1, 1), sectors(2, 4)];
    expect(proofOf(table, undefined, 'rewritten')).toEqual({ kind: 'table', holds: planned });
    expect(proofOf(table, undefined, 'as-is')).toEqual({ kind: 'table', holds: [...planned, sectors(131067, 5)] });
  });
});

describe('the smallest size, spelled', () => {
  it.each([
    [1, '1K'],
    [1536, '2K'],
    [1023 * K, '1023K'],
    [M, '1M'],
    [1023 * M, '1023M'],
    [M * 1024, '1G'],
    [3 * M * 1024 + K, `${3 * 1024 * 1024 + 1}K`],
  ])('formatExactSize(%d) = %s', (bytes, text) => expect(formatExactSize(bytes)).toBe(text));

  it.each([
    [41 * M, '41M'],
    [2 * 1024 * M, '2G'],
    [40 * M + 256 * K, '41216K (resize --info rounds it up to 41M)'],
    // Below 1 MiB the argument still says 1M, the smallest whole MiB.
    [100, '1K (resize --info rounds it up to 1M)'],
    [512 * K, '512K (resize --info rounds it up to 1M)'],
    [M, '1M'],
    [1024 * M + K, '1048577K (resize --info rounds it up to 1025M)'],
  ])('smallestSizeText(%d) = %s', (bytes, text) => expect(smallestSizeText(bytes)).toBe(text));
});
