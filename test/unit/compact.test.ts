// The pure parts of compact: range arithmetic, the trim plan over a guest layout, the estimate's arithmetic.
import { describe, expect, it } from 'vitest';
import { alignInward, coveredClusters, intersect, normalize, subtract, totalBytes, touchedClusters } from '../../src/util/ranges.js';
import { gapRanges, planTrims, type GuestLayout } from '../../src/commands/compact/trim.js';
import { discardedRanges } from '../../src/commands/compact/discover.js';
import { heldByLowerLayers, reclaimableBytes } from '../../src/commands/compact/qcow2.js';

const K = 1024;
const M = 1024 * K;
const r = (start: number, length: number) => ({ start, length });

describe('ranges', () => {
  it.each([
    [[r(10, 5), r(0, 5), r(5, 2)], [r(0, 7), r(10, 5)]],
    [[r(0, 10), r(2, 3)], [r(0, 10)]],
    [[r(0, 0), r(4, 1)], [r(4, 1)]],
  ])('normalize %j', (input, expected) => expect(normalize(input)).toEqual(expected));

  it.each([
    [[r(0, 10)], [r(5, 10)], [r(5, 5)]],
    [[r(0, 4), r(8, 4)], [r(2, 8)], [r(2, 2), r(8, 2)]],
    [[r(0, 4)], [r(4, 4)], []],
  ])('intersect %j %j', (a, b, expected) => expect(intersect(a, b)).toEqual(expected));

  it.each([
    [r(0, 100), [r(10, 10), r(50, 60)], [r(0, 10), r(20, 30)]],
    [r(0, 100), [], [r(0, 100)]],
    [r(10, 10), [r(0, 100)], []],
  ])('subtract %j %j', (within, minus, expected) => expect(subtract(within, minus)).toEqual(expected));

  it('counts clusters covered and touched', () => {
    expect(coveredClusters([r(0, 3 * M), r(4 * M + 1, 2 * M)], M)).toEqual([0, 1, 2, 5]);
    expect(touchedClusters([r(0, 1), r(10, 1), r(M, M + 1)], M)).toBe(3);
    expect(totalBytes([r(0, 3), r(7, 4)])).toBe(7);
  });

  it.each([
    [r(100, 200 * K), 64 * K, r(64 * K, 128 * K)],
    [r(0, 64 * K), 64 * K, r(0, 64 * K)],
    [r(1, 64 * K), 64 * K, undefined],
  ])('alignInward %j to %d', (range, cluster, expected) => expect(alignInward(range, cluster)).toEqual(expected));
});

const disk = 512 * M;
function layout(partial: Partial<GuestLayout>): GuestLayout {
  // A GPT of 128 entries: 33 sectors of backup entries and header after the last usable LBA.
  return { device: '/dev/sda', diskBytes: disk, usableEndByte: disk - 33 * 512, table: 'gpt', partitions: [], filesystems: {}, volumeGroups: [], ...partial };
}

describe('planTrims', () => {
  it('trims filesystems, discards swap after its header and the gaps, and leaves unknown content alone', () => {
    const plan = planTrims(
      layout({
        partitions: [
          { number: 1, startByte: M, endByte: 9 * M, extended: false },
          { number: 2, startByte: 10 * M, endByte: 100 * M, extended: false },
          { number: 3, startByte: 100 * M, endByte: 200 * M, extended: false },
        ],
        filesystems: { '/dev/sda1': 'unknown', '/dev/sda2': 'swap', '/dev/sda3': 'xfs', '/dev/vg/lv': 'ext4', '/dev/vg/sw': 'swap', '/dev/sda4': 'iso9660' },
        volumeGroups: [{ name: 'vg', freeBytes: 8 * M }, { name: 'full', freeBytes: 0 }],
      }),
      64 * K,
    );
    expect(plan.steps).toEqual([
      { kind: 'discard-swap', device: '/dev/sda2', range: r(10 * M + 64 * K, 90 * M - 64 * K) },
      { kind: 'trim-filesystem', device: '/dev/sda3', fsType: 'xfs' },
      { kind: 'trim-filesystem', device: '/dev/vg/lv', fsType: 'ext4' },
      { kind: 'discard-vg-free', vg: 'vg', freeBytes: 8 * M },
      { kind: 'discard-gap', range: r(9 * M, M) },
      // Up to the GPT backup header, in whole clusters.
      { kind: 'discard-gap', range: r(200 * M, disk - 200 * M - 64 * K) },
    ]);
    expect(plan.skipped).toEqual([
      'the iso9660 filesystem on /dev/sda4 cannot be trimmed and is left as it is',
      'the swap space on /dev/vg/sw (inside LVM) is left as it is',
    ]);
  });

  it('never discards before the first partition or inside an extended partition (boot code, EBRs)', () => {
    const gaps = gapRanges(
      layout({
        table: 'msdos',
        partitions: [
          { number: 1, startByte: 2 * M, endByte: 10 * M, extended: false },
          { number: 2, startByte: 10 * M, endByte: disk, extended: true },
          { number: 5, startByte: 11 * M, endByte: 19 * M, extended: false },
          { number: 6, startByte: 20 * M, endByte: disk, extended: false },
        ],
      }),
      64 * K,
    );
    expect(gaps).toEqual([]);
  });

  it('a GPT with more entries keeps its larger backup area: gaps stop at the header\'s last usable LBA', () => {
    // 256 entries of 128 bytes: 64 sectors of backup entries, then the backup header.
    const usableEndByte = disk - 65 * 512;
    const gaps = gapRanges(layout({ usableEndByte, partitions: [{ number: 1, startByte: M, endByte: 100 * M, extended: false }] }), 512);
    expect(gaps).toEqual([r(100 * M, usableEndByte - 100 * M)]);
    expect(gapRanges(layout({ usableEndByte: 0, partitions: [{ number: 1, startByte: M, endByte: 100 * M, extended: false }] }), 512)).toEqual([]);
  });

  it('a disk without a table: the whole-disk swap keeps its first page and there are no gaps', () => {
    const plan = planTrims(layout({ table: 'unknown', filesystems: { '/dev/sda': 'swap' } }), M);
    expect(plan.steps).toEqual([{ kind: 'discard-swap', device: '/dev/sda', range: r(M, disk - M) }]);
  });
});

describe('estimate arithmetic', () => {
  it('the overlay clusters that trims zeroed are the free ones; written ones are not', () => {
    expect(
      discardedRanges([
        { start: 0, length: M, depth: 1, zero: false, data: true },
        { start: M, length: M, depth: 0, zero: true, data: false },
        { start: 2 * M, length: M, depth: 0, zero: false, data: true },
        { start: 3 * M, length: M, depth: 1, zero: true, data: false },
      ]),
    ).toEqual([r(M, M)]);
  });

  it('reclaimable: top-layer clusters free in the guest whose host range holds data', () => {
    const extents = [
      { start: 0, length: 4 * M, depth: 0, zero: false, data: true, offset: 10 * M },
      { start: 4 * M, length: 4 * M, depth: 1, zero: false, data: true, offset: 50 * M },
      { start: 8 * M, length: 2 * M, depth: 0, zero: true, data: false },
    ];
    // Host file: data everywhere but the hole at [11M, 12M) (a preallocated-metadata cluster).
    const hostData = [r(0, 11 * M), r(12 * M, 100 * M)];
    const free = [r(M, 2 * M), r(5 * M, M), r(8 * M, 2 * M)];
    expect(reclaimableBytes(extents, hostData, free)).toBe(M);
    expect(heldByLowerLayers(extents, free)).toBe(M);
  });
});

describe('ploop host bytes freed', () => {
  it('counts the data cut off the tail, less the sparse holes the moved clusters fill', async () => {
    const { hostBytesFreed } = await import('../../src/commands/compact/ploop.js');
    const plan = {
      steps: [
        { kind: 'mark-in-use' as const, dropsExtension: false },
        { kind: 'move-cluster' as const, virtualIndex: 9, fromOffset: 5 * M, toOffset: 2 * M },
        { kind: 'move-cluster' as const, virtualIndex: 8, fromOffset: 4 * M, toOffset: 3 * M },
        { kind: 'truncate' as const, sizeBytes: 4 * M },
        { kind: 'clear-in-use' as const },
      ],
      releasedClusters: 0,
      notReclaimable: 0,
      reclaimedBytes: 2 * M,
      newFileSizeBytes: 4 * M,
    };
    // The file is 6 MiB; its data lies in [0, 2M) and [3M, 6M): the hole at 2M gets filled.
    expect(hostBytesFreed(plan, M, 6 * M, [r(0, 2 * M), r(3 * M, 3 * M)])).toBe(M);
  });
});
