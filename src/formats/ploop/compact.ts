// Compaction of the top delta: free clusters dropped from the BAT, clusters from the tail moved
// into the holes (copy, fsync, BAT, fsync), the file truncated. Never unmaps a cluster whose
// virtual range a lower delta also holds: that would bring the older data back into view.
import { throwIfCancelled } from '../../util/cancel.js';
import { entryToOffset } from './bat.js';
import { extensionActive } from './check.js';
import { clusterBytes, dataOffsetBytes } from './header.js';
import { clearInUse, markInUse, truncateDelta, syncData } from './delta.js';
import { readFully, writeFully } from '../../util/file-io.js';
import { type PloopImage, requireRecovered } from './image.js';
import { type DeltaLayout, moveCluster } from './resize.js';

export type CompactStep =
  | { kind: 'mark-in-use'; dropsExtension: boolean }
  | { kind: 'release-clusters'; virtualIndices: number[] }
  | { kind: 'move-cluster'; virtualIndex: number; fromOffset: number; toOffset: number }
  | { kind: 'truncate'; sizeBytes: number }
  | { kind: 'clear-in-use' };

export interface CompactPlan {
  steps: CompactStep[];
  /** Free clusters dropped from the top delta's BAT. */
  releasedClusters: number;
  /** Free clusters that stay because a lower delta holds the same range (see the header comment). */
  notReclaimable: number;
  /** Host bytes the delta file shrinks by. */
  reclaimedBytes: number;
  newFileSizeBytes: number;
}

export interface BlockCounts {
  blockSizeSectors: number;
  totalBlocks: number;
  allocatedBlocks: number;
}

/** Numbers for `compact --info`: clusters of the top delta in total and allocated. */
export function countBlocks(top: DeltaLayout): BlockCounts {
  let allocated = 0;
  for (let i = 0; i < top.header.batEntries; i++) if (top.bat[i] !== 0) allocated++;
  return { blockSizeSectors: top.header.clusterSectors, totalBlocks: top.header.batEntries, allocatedBlocks: allocated };
}

/** Whether a delta below the top holds virtual cluster `index`. */
export function heldBelow(lower: readonly DeltaLayout[], index: number): boolean {
  return lower.some((l) => index < l.header.batEntries && l.bat[index] !== 0);
}

/** Plans the compaction of the top delta given the virtual clusters that no filesystem uses. */
export function planCompact(top: DeltaLayout, lower: readonly DeltaLayout[], freeClusters: Iterable<number>): CompactPlan {
  const header = top.header;
  const cluster = clusterBytes(header);
  const dataStart = dataOffsetBytes(header);
  const release: number[] = [];
  let notReclaimable = 0;
  const seen = new Set<number>();
  for (const index of freeClusters) {
    if (!Number.isInteger(index) || index < 0 || index >= header.batEntries || seen.has(index)) continue;
    seen.add(index);
    if (top.bat[index] === 0) continue;
    if (heldBelow(lower, index)) notReclaimable++;
    else release.push(index);
  }
  release.sort((a, b) => a - b);
  const released = new Set(release);

  // Host slot → virtual index of the clusters that stay.
  const owner = new Map<number, number>();
  let maxSlot = -1;
  for (let i = 0; i < header.batEntries; i++) {
    const entry = top.bat[i]!;
    if (entry === 0 || released.has(i)) continue;
    const slot = (entryToOffset(header, entry) - dataStart) / cluster;
    owner.set(slot, i);
    maxSlot = Math.max(maxSlot, slot);
  }
  const moves: CompactStep[] = [];
  let hole = 0;
  let tail = maxSlot;
  for (;;) {
    while (owner.has(hole)) hole++;
    while (tail >= 0 && !owner.has(tail)) tail--;
    if (hole >= tail) break;
    const virtualIndex = owner.get(tail)!;
    moves.push({ kind: 'move-cluster', virtualIndex, fromOffset: dataStart + tail * cluster, toOffset: dataStart + hole * cluster });
    owner.delete(tail);
    owner.set(hole, virtualIndex);
  }
  const newFileSizeBytes = dataStart + owner.size * cluster;
  const steps: CompactStep[] = [{ kind: 'mark-in-use', dropsExtension: extensionActive(header) }];
  if (release.length > 0) steps.push({ kind: 'release-clusters', virtualIndices: release });
  steps.push(...moves);
  if (newFileSizeBytes < top.fileSizeBytes) steps.push({ kind: 'truncate', sizeBytes: newFileSizeBytes });
  steps.push({ kind: 'clear-in-use' });
  return {
    steps,
    releasedClusters: release.length,
    notReclaimable,
    reclaimedBytes: Math.max(0, top.fileSizeBytes - newFileSizeBytes),
    newFileSizeBytes,
  };
}

export function describeCompactStep(step: CompactStep): string {
  switch (step.kind) {
    case 'mark-in-use':
      return step.dropsExtension ? 'Mark the top delta in use and drop its format extension (a dirty bitmap that the change makes stale).' : 'Mark the top delta in use.';
    case 'release-clusters':
      return `Release ${step.virtualIndices.length} free clusters from the BAT.`;
    case 'move-cluster':
      return `Move virtual cluster ${step.virtualIndex} from byte ${step.fromOffset} into the hole at byte ${step.toOffset}.`;
    case 'truncate':
      return `Truncate the delta file to ${step.sizeBytes} bytes.`;
    case 'clear-in-use':
      return 'Clear the in-use mark.';
  }
}

/** Zeroes the given BAT slots, one write per contiguous run, then one fsync. */
function releaseSlots(image: PloopImage, indices: readonly number[]): void {
  const delta = image.deltas[0]!;
  for (let i = 0; i < indices.length; ) {
    let j = i;
    while (j + 1 < indices.length && indices[j + 1] === indices[j]! + 1) j++;
    writeFully(delta.fd, Buffer.alloc((j - i + 1) * 4), 64 + 4 * indices[i]!);
    for (let k = i; k <= j; k++) delta.bat[indices[k]!] = 0;
    i = j + 1;
  }
  syncData(delta, `${indices.length} free clusters released`);
}

export function executeCompact(image: PloopImage, plan: CompactPlan, options: { progress?: (doneBytes: number, totalBytes: number) => void } = {}): void {
  requireRecovered(image);
  const delta = image.deltas[0]!;
  const cluster = clusterBytes(delta.header);
  const moves = plan.steps.filter((s) => s.kind === 'move-cluster').length;
  let done = 0;
  for (const step of plan.steps) {
    throwIfCancelled();
    switch (step.kind) {
      case 'mark-in-use':
        markInUse(delta);
        break;
      case 'release-clusters':
        releaseSlots(image, step.virtualIndices);
        break;
      case 'move-cluster':
        moveCluster(delta, step.virtualIndex, step.fromOffset, step.toOffset);
        done += cluster;
        options.progress?.(done, moves * cluster);
        break;
      case 'truncate':
        truncateDelta(delta, step.sizeBytes);
        break;
      case 'clear-in-use':
        clearInUse(delta);
        break;
    }
  }
}

/** Virtual clusters of the top delta whose data is all zeros (for convert --expanding). */
export function findZeroClusters(image: PloopImage, progress?: (doneBytes: number, totalBytes: number) => void): number[] {
  const delta = image.deltas[0]!;
  const cluster = clusterBytes(delta.header);
  const zero: number[] = [];
  const zeros = Buffer.alloc(cluster);
  const allocated: number[] = [];
  for (let i = 0; i < delta.header.batEntries; i++) if (delta.bat[i] !== 0) allocated.push(i);
  allocated.forEach((index, n) => {
    throwIfCancelled();
    const data = readFully(delta.fd, cluster, entryToOffset(delta.header, delta.bat[index]!));
    if (data.equals(zeros)) zero.push(index);
    progress?.((n + 1) * cluster, allocated.length * cluster);
  });
  return zero;
}

/**
 * Before a shrink: the top's clusters past the new end leave the BAT through this engine, which also moves tail
 * clusters into the holes they leave and shortens the file. The shrink itself only drops BAT slots and cuts the
 * file after the last cluster it keeps, so clusters a grow had appended (then left past the new end) would stay
 * in the middle of the file as dead space.
 */
export function releaseBeyond(image: PloopImage, lower: readonly DeltaLayout[], newSizeBytes: number): void {
  const top = image.deltas[0]!;
  const keptEntries = Math.ceil(newSizeBytes / clusterBytes(top.header));
  const beyond: number[] = [];
  for (let i = keptEntries; i < top.header.batEntries; i++) if (top.bat[i] !== 0) beyond.push(i);
  if (beyond.length === 0) return;
  executeCompact(image, planCompact({ header: top.header, bat: top.bat, fileSizeBytes: top.fileSizeBytes }, lower, beyond));
}
