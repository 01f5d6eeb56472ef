// The pure planners: what moves where for grow, shrink, compact and preallocation.
import { describe, expect, test } from 'vitest';
import { Refused } from '../../../src/util/errors.js';
import { SIGNATURE_V1, type PloopHeader } from '../../../src/formats/ploop/header.js';
import { type DeltaLayout, planResize } from '../../../src/formats/ploop/resize.js';
import { countBlocks, planCompact } from '../../../src/formats/ploop/compact.js';
import { planPreallocate } from '../../../src/formats/ploop/convert.js';

const K = 1024;
const CLUSTER = 64 * K; // 128 sectors: one cluster of BAT holds 16368 entries

/** A v2 delta of `entries` clusters whose slot i points at host cluster hosts[i] (0 = unallocated). */
function layout(entries: number, hosts: Record<number, number>, dataClusters = 1): DeltaLayout {
  const header: PloopHeader = {
    magic: 'WithouFreSpacExt',
    version: 2,
    heads: 16,
    cylinders: 0,
    clusterSectors: CLUSTER / 512,
    batEntries: entries,
    sizeSectors: (entries * CLUSTER) / 512,
    inUse: 0,
    dataOffsetSectors: (dataClusters * CLUSTER) / 512,
    flags: 0,
    extOffsetSectors: 0,
  };
  const bat = new Uint32Array(Math.max(entries, (dataClusters * CLUSTER - 64) / 4));
  let last = dataClusters - 1;
  for (const [i, host] of Object.entries(hosts)) {
    bat[Number(i)] = host;
    last = Math.max(last, host);
  }
  return { header, bat, fileSizeBytes: (last + 1) * CLUSTER };
}

const kinds = (steps: { kind: string }[]): string[] => steps.map((s) => s.kind);

describe('planResize', () => {
  test('grow within the first BAT cluster: header only', () => {
    const plan = planResize(layout(16, { 0: 1, 5: 2 }), [], 1000 * CLUSTER);
    expect(kinds(plan.steps)).toEqual(['mark-in-use', 'write-header', 'clear-in-use', 'update-descriptor']);
    expect(plan.steps[1]).toEqual({ kind: 'write-header', sizeSectors: 128000, batEntries: 1000, dataOffsetSectors: 128 });
    expect(plan.fileDeltaBytes).toBe(0);
  });

  test('grow past one BAT cluster moves the clusters in the way to the end, in order', () => {
    // 40000 entries need 64 + 160000 bytes = 3 clusters of table: host clusters 1 and 2 are in the way.
    const plan = planResize(layout(16, { 0: 2, 3: 1, 7: 4, 9: 3 }), [], 40000 * CLUSTER);
    expect(plan.steps).toEqual([
      { kind: 'mark-in-use', dropsExtension: false },
      { kind: 'move-cluster', virtualIndex: 0, fromOffset: 2 * CLUSTER, toOffset: 5 * CLUSTER },
      { kind: 'move-cluster', virtualIndex: 3, fromOffset: 1 * CLUSTER, toOffset: 6 * CLUSTER },
      { kind: 'zero-range', offsetBytes: CLUSTER, lengthBytes: 2 * CLUSTER },
      { kind: 'write-header', sizeSectors: 40000 * 128, batEntries: 40000, dataOffsetSectors: 3 * 128 },
      { kind: 'clear-in-use' },
      { kind: 'update-descriptor', diskSizeSectors: 40000 * 128 },
    ]);
    expect(plan.fileDeltaBytes).toBe(2 * CLUSTER);
  });

  test('grow of an almost empty delta puts moved clusters after the new table', () => {
    const plan = planResize(layout(16, { 4: 1 }), [], 40000 * CLUSTER);
    expect(plan.steps[1]).toEqual({ kind: 'move-cluster', virtualIndex: 4, fromOffset: CLUSTER, toOffset: 3 * CLUSTER });
  });

  test('grow of a preallocated image allocates the new clusters after the header', () => {
    const plan = planResize(layout(2, { 0: 1, 1: 2 }), [], 5 * CLUSTER, { preallocated: true });
    expect(plan.steps.find((s) => s.kind === 'allocate-clusters')).toEqual({ kind: 'allocate-clusters', fromIndex: 2, toIndex: 5, firstOffset: 3 * CLUSTER });
    expect(kinds(plan.steps).indexOf('allocate-clusters')).toBeGreaterThan(kinds(plan.steps).indexOf('write-header'));
  });

  test('grow from a size that ends inside a cluster zeroes the hidden tail', () => {
    const l = layout(2, { 1: 1 });
    l.header.sizeSectors = 128 + 64;
    const plan = planResize(l, [], 4 * CLUSTER);
    expect(plan.steps[1]).toEqual({ kind: 'zero-range', offsetBytes: CLUSTER + 32 * K, lengthBytes: 32 * K });
  });

  test('shrink: header first, then the slots past the end, then the file cut where they were last', () => {
    const plan = planResize(layout(8, { 0: 1, 2: 3, 5: 2, 7: 4 }), [], 4 * CLUSTER);
    expect(plan.steps).toEqual([
      { kind: 'mark-in-use', dropsExtension: false },
      { kind: 'write-header', sizeSectors: 512, batEntries: 4, dataOffsetSectors: 128 },
      { kind: 'release-clusters', fromIndex: 4, toIndex: 8, allocated: 2 },
      { kind: 'truncate', sizeBytes: 4 * CLUSTER },
      { kind: 'clear-in-use' },
      { kind: 'update-descriptor', diskSizeSectors: 512 },
    ]);
    // Slot 7 held the last host cluster (4); host cluster 2 becomes a hole inside, left for compact.
    const plan2 = planResize(layout(8, { 0: 1, 2: 2, 7: 3 }), [], 4 * CLUSTER);
    expect(plan2.steps.find((s) => s.kind === 'truncate')).toEqual({ kind: 'truncate', sizeBytes: 3 * CLUSTER });
  });

  // Issue 26, class 1: sizes that end inside a cluster. The BAT covers the partial last cluster (ceil), on grow and
  // on shrink; a shrink never releases the cluster whose first part is kept.
  test('grow to a size inside a cluster: the BAT gets a slot for the partial last cluster', () => {
    const plan = planResize(layout(4, { 0: 1 }), [], 5 * CLUSTER + 512);
    expect(plan.steps[1]).toEqual({ kind: 'write-header', sizeSectors: 5 * 128 + 1, batEntries: 6, dataOffsetSectors: 128 });
  });

  test('shrink to a size inside a cluster keeps that cluster, its slot and its host bytes', () => {
    const plan = planResize(layout(8, { 0: 1, 3: 2, 5: 3 }), [], 3 * CLUSTER + 32 * K);
    expect(plan.steps).toEqual([
      { kind: 'mark-in-use', dropsExtension: false },
      { kind: 'write-header', sizeSectors: 3 * 128 + 64, batEntries: 4, dataOffsetSectors: 128 },
      { kind: 'release-clusters', fromIndex: 4, toIndex: 8, allocated: 1 },
      { kind: 'truncate', sizeBytes: 3 * CLUSTER },
      { kind: 'clear-in-use' },
      { kind: 'update-descriptor', diskSizeSectors: 3 * 128 + 64 },
    ]);
  });

  test.each([
    ['a size that is not whole sectors', () => planResize(layout(4, {}), [], 1000)],
    ['a v1 delta past 2 TiB', () => planResize({ ...layout(4, {}), header: { ...layout(4, {}).header, magic: SIGNATURE_V1 } }, [], 2 ** 41)],
    ['a shrink that leaves snapshot data past the end', () => planResize(layout(8, {}), [layout(8, { 6: 1 })], 4 * CLUSTER)],
  ])('refuses %s', (_name, fn) => {
    expect(fn).toThrow(Refused);
  });
});

describe('planCompact', () => {
  test('releases free clusters, fills holes from the tail, truncates', () => {
    // slots 0..5 at hosts 1..6; 1 and 3 are free → holes at hosts 2 and 4; tail clusters 6 and 5 move in.
    const top = layout(8, { 0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6 });
    const plan = planCompact(top, [], [1, 3, 7]);
    expect(plan.steps).toEqual([
      { kind: 'mark-in-use', dropsExtension: false },
      { kind: 'release-clusters', virtualIndices: [1, 3] },
      { kind: 'move-cluster', virtualIndex: 5, fromOffset: 6 * CLUSTER, toOffset: 2 * CLUSTER },
      { kind: 'move-cluster', virtualIndex: 4, fromOffset: 5 * CLUSTER, toOffset: 4 * CLUSTER },
      { kind: 'truncate', sizeBytes: 5 * CLUSTER },
      { kind: 'clear-in-use' },
    ]);
    expect(plan.reclaimedBytes).toBe(2 * CLUSTER);
    expect(plan.releasedClusters).toBe(2);
  });

  test('fills pre-existing holes too', () => {
    const plan = planCompact(layout(4, { 0: 1, 1: 5 }), [], []);
    expect(plan.steps.filter((s) => s.kind === 'move-cluster')).toEqual([{ kind: 'move-cluster', virtualIndex: 1, fromOffset: 5 * CLUSTER, toOffset: 2 * CLUSTER }]);
    expect(plan.newFileSizeBytes).toBe(3 * CLUSTER);
  });

  test('never releases a cluster that a lower delta also holds', () => {
    const plan = planCompact(layout(4, { 0: 1, 1: 2 }), [layout(4, { 1: 1 })], [0, 1]);
    expect(plan.releasedClusters).toBe(1);
    expect(plan.notReclaimable).toBe(1);
    expect(plan.steps[1]).toEqual({ kind: 'release-clusters', virtualIndices: [0] });
  });

  test('nothing to do: no release, no move, no truncate', () => {
    expect(kinds(planCompact(layout(4, { 0: 1, 1: 2 }), [], [2, 3, -1, 99]).steps)).toEqual(['mark-in-use', 'clear-in-use']);
  });

  test('countBlocks', () => {
    expect(countBlocks(layout(10, { 0: 1, 4: 2 }))).toEqual({ blockSizeSectors: 128, totalBlocks: 10, allocatedBlocks: 2 });
  });
});

describe('planPreallocate', () => {
  test('allocates every hole in runs after the used end', () => {
    const plan = planPreallocate(layout(6, { 1: 1, 4: 2 }));
    expect(plan.allocate).toEqual([
      { fromIndex: 0, toIndex: 1, firstOffset: 3 * CLUSTER },
      { fromIndex: 2, toIndex: 4, firstOffset: 4 * CLUSTER },
      { fromIndex: 5, toIndex: 6, firstOffset: 6 * CLUSTER },
    ]);
    expect(plan.allocateBytes).toBe(4 * CLUSTER);
  });
});
