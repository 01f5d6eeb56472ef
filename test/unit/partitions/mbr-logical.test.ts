// MBR with four logical partitions (issue 26, class 2): the EBR chain is walked hop by hop (each next-EBR entry is
// relative to the extended container's start, not to the current EBR: the two agree only for the first hop), and a
// change of the last logical partition writes the container first when it grows and last when it shrinks, so that
// the container covers its logicals after any prefix of the writes. Oracle: sfdisk, which wrote the table.
import { afterAll, describe, expect, it } from 'vitest';
import { extendedContainer, lastPartition, readTable, tableWrites } from '../../../src/partitions/table.js';
import { applyWrites, cleanup, fileSource, makeDisk, sh } from './disk-fixture.js';

afterAll(cleanup);
const MiB = 1024 * 1024;

const FOUR_LOGICAL = `label: dos
start=2048, size=16384, type=83
start=18432, type=5
start=20480, size=16384, type=83
start=38912, size=16384, type=7
start=57344, size=16384, type=82
start=75776, type=83
`;

interface SfdiskPartition {
  node: string;
  start: number;
  size: number;
  type: string;
}

function sfdiskPartitions(path: string): SfdiskPartition[] {
  return (JSON.parse(sh('sfdisk', ['-J', path])) as { partitiontable: { partitions: SfdiskPartition[] } }).partitiontable.partitions;
}

/** The extended container and each logical partition as sfdisk reports them: number → [start, size]. */
function layout(path: string): Record<number, [number, number]> {
  return Object.fromEntries(sfdiskPartitions(path).map((p) => [Number(/(\d+)$/.exec(p.node)![1]), [p.start, p.size]]));
}

describe('MBR with four logical partitions', () => {
  it('reads every logical partition where sfdisk put it', async () => {
    const path = makeDisk('four-logical.raw', 64, FOUR_LOGICAL);
    const table = await readTable(fileSource(path));
    const read = table.kind === 'mbr' ? table.partitions : [];
    expect(Object.fromEntries(read.map((p) => [p.number, [p.startSector, p.endSector - p.startSector + 1]]))).toEqual(layout(path));
    expect(read.map((p) => `${p.number}:${p.kind}:${p.typeId}`)).toEqual(['1:primary:83', '2:extended:05', '5:logical:83', '6:logical:07', '7:logical:82', '8:logical:83']);
    expect(lastPartition(table)).toMatchObject({ number: 8, startSector: 75776, endSector: 64 * 2048 - 1 });
  });

  it('grow of the last logical: the container is written first, then the EBR of partition 8; the others unchanged', async () => {
    const path = makeDisk('four-logical-grow.raw', 64, FOUR_LOGICAL);
    const before = layout(path);
    const table = await readTable(fileSource(path));
    const last = lastPartition(table)!;
    const writes = tableWrites(table, 96 * 2048, 96 * 2048 - 1);
    expect(writes.map((w) => [w.what, w.offsetBytes])).toEqual([
      [`extended partition ${extendedContainer(table)!.number}`, 0],
      ['logical partition 8', last.entrySector! * 512],
    ]);
    applyWrites(path, 96 * MiB, writes);
    expect(layout(path)).toEqual({ ...before, 2: [18432, 96 * 2048 - 18432], 8: [75776, 96 * 2048 - 75776] });
  });

  it('shrink of the last logical: its EBR first, the container last; after the first write alone the container still covers it', async () => {
    const path = makeDisk('four-logical-shrink.raw', 64, FOUR_LOGICAL);
    const before = layout(path);
    const table = await readTable(fileSource(path));
    const writes = tableWrites(table, 48 * 2048, 48 * 2048 - 1);
    expect(writes.map((w) => w.what)).toEqual(['logical partition 8', 'extended partition 2']);
    applyWrites(path, 64 * MiB, writes.slice(0, 1));
    const half = layout(path);
    expect(half[2]![0] + half[2]![1]).toBeGreaterThanOrEqual(half[8]![0] + half[8]![1]);
    applyWrites(path, 48 * MiB, writes);
    expect(layout(path)).toEqual({ ...before, 2: [18432, 48 * 2048 - 18432], 8: [75776, 48 * 2048 - 75776] });
  });
});
