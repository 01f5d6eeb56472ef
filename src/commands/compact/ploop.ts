// compact and its estimate for ploop: the free clusters found in an overlay, then the ploop engine drops
// them from the BAT, moves tail clusters into the holes and truncates the delta (QEMU's parallels driver
// ignores discard, so this is ours to do).
import { recoverPloopImage, requireChainStillNamed, type PloopImage } from '../../formats/ploop/image.js';
import { qemuDeltaChain } from '../../formats/ploop/qemu-chain.js';
import { countBlocks, describeCompactStep, executeCompact, heldBelow, planCompact, type CompactPlan } from '../../formats/ploop/compact.js';
import { MiB } from '../../util/units.js';
import type { Context } from '../context.js';
import { discoverFreeSpace, type BlockEstimate } from './discover.js';
import { coveredClusters, intersect, totalBytes, type Range } from '../../util/ranges.js';
import { hostDataRanges } from '../../formats/ploop/host-extents.js';

/** qcow2 clusters stop at 2 MiB; a larger ploop cluster is free when every overlay cluster in it is. */
const MAX_OVERLAY_CLUSTER_BYTES = 2 * MiB;

export interface PloopEstimate extends BlockEstimate {
  plan: CompactPlan;
}

/** The session's image, after finishing what an interrupted operation left behind (when it may be written). */
export function recoveredForCompact(image: PloopImage, write: boolean, notes: string[]): PloopImage {
  if (image.pendingRecovery.length > 0) {
    if (write) notes.push(`Completed an interrupted operation: ${recoverPloopImage(image).join('; ')}.`);
    else notes.push(`The image was left by an interrupted operation (${image.pendingRecovery.join('; ')}); the next compact completes it first.`);
  }
  return image;
}

/** Finds the free clusters through the appliance and plans what the ploop engine would drop. */
export async function estimatePloop(image: PloopImage, context: Context): Promise<PloopEstimate> {
  const top = image.deltas[0]!;
  const clusterBytes = image.clusterBytes;
  // The appliance sees what the whole chain shows; the plan then drops only top clusters no lower delta backs.
  const chain = qemuDeltaChain(image.deltas.map((delta) => delta.path));
  requireChainStillNamed(image, 'the appliance');
  const session = await discoverFreeSpace(chain, 'parallels', Math.min(clusterBytes, MAX_OVERLAY_CLUSTER_BYTES), context, top.path);
  const free = coveredClusters(session.freeRanges, clusterBytes);
  const lower = image.deltas.slice(1);
  const plan = planCompact(top, lower, free);
  // Free space that only a lower delta holds stays there too: only the top delta is compacted.
  const onlyBelow = free.filter((index) => index < top.header.batEntries && top.bat[index] === 0 && heldBelow(lower, index)).length;
  const counts = countBlocks(top);
  return {
    clusterBytes,
    totalBlocks: counts.totalBlocks,
    allocatedBlocks: counts.allocatedBlocks,
    usedBlocks: counts.allocatedBlocks - plan.releasedClusters,
    reclaimableBytes: hostBytesFreed(plan, clusterBytes, top.fileSizeBytes, await hostDataRanges(top)),
    heldByLowerLayersBytes: (plan.notReclaimable + onlyBelow) * clusterBytes,
    plan,
    session: { layout: session.layout, steps: session.steps, skipped: session.skipped },
    warnings: [],
  };
}

/**
 * Host bytes the plan frees: what the truncation cuts off that holds data, less the sparse holes that the
 * moved clusters fill. Holes left by an interrupted run (released but not yet filled) count too.
 */
export function hostBytesFreed(plan: CompactPlan, clusterBytes: number, fileSizeBytes: number, hostData: readonly Range[]): number {
  const cut = totalBytes(intersect([{ start: plan.newFileSizeBytes, length: Math.max(0, fileSizeBytes - plan.newFileSizeBytes) }], hostData));
  const filled = plan.steps.flatMap((s) => (s.kind === 'move-cluster' ? [{ start: s.toOffset, length: clusterBytes }] : []));
  const newlyAllocated = totalBytes(filled) - totalBytes(intersect(filled, hostData));
  return Math.max(0, cut - newlyAllocated);
}

/** Whether the plan changes the delta at all (releases, moves or a truncation). */
export function planChanges(plan: CompactPlan): boolean {
  return plan.steps.some((s) => s.kind === 'release-clusters' || s.kind === 'move-cluster' || s.kind === 'truncate');
}

export function describePloopSteps(plan: CompactPlan): string[] {
  // The moves can number in the thousands: one sentence stands for all of them.
  const moves = plan.steps.filter((s) => s.kind === 'move-cluster').length;
  const sentences: string[] = [];
  for (const step of plan.steps) {
    if (step.kind !== 'move-cluster') sentences.push(describeCompactStep(step));
    else if (sentences.at(-1)?.startsWith('Move ') !== true) sentences.push(`Move ${moves} cluster(s) from the end of the delta into the freed holes.`);
  }
  return sentences;
}

export function runPloopCompact(image: PloopImage, plan: CompactPlan, context: Context): void {
  context.progress.step('Compacting the ploop delta');
  executeCompact(image, plan, { progress: (done, total) => context.progress.update(total > 0 ? done / total : 1) });
  context.progress.done();
}
