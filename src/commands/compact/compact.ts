// compact: free the host space held by clusters no filesystem uses, in place (qcow2 by discard, ploop by
// dropping clusters from the BAT). --dry-run measures the same in a throwaway overlay and changes nothing.
import type { ChangeFacts, ChangeReport } from '../report.js';
import type { Context } from '../context.js';
import { openOrDelegate } from '../online.js';
import type { PloopImage, Qcow2Image } from '../../formats/image.js';
import { hostBytesOf } from '../../formats/ploop/delta.js';
import { formatBytes } from '../../util/units.js';
import { describeTrimStep, type TrimStep } from './trim.js';
import { compactQcow2, estimateQcow2 } from './qcow2.js';
import { describePloopSteps, estimatePloop, planChanges, recoveredForCompact, runPloopCompact } from './ploop.js';
import { capitalize } from './info.js';
import { hostAllocatedBytes } from '../../util/space.js';
import { removeStaleTemporaries } from '../../util/atomic.js';

interface Outcome {
  plan: string[];
  hostBytesBefore: number;
  hostBytesAfter: number;
  freedBytes: number;
  heldByLowerLayersBytes?: number;
  warnings: string[];
  notes: string[];
}

function qcow2Plan(path: string, steps: readonly TrimStep[]): string[] {
  return [
    `Compact "${path}" in place: discard the space no filesystem uses, then cut the free clusters off the end of the file.`,
    ...steps.map((s, i) => `  ${i + 1}. ${describeTrimStep(s)}`),
    `  ${steps.length + 1}. Truncate the file after its last cluster in use.`,
  ];
}

async function runQcow2(image: Qcow2Image, dryRun: boolean, context: Context): Promise<Outcome> {
  const layersNote =
    image.chain.length > 1 || image.snapshots.length > 0
      ? ['Only the current state of the top layer is compacted; backing files and internal snapshots keep what they hold.']
      : [];
  if (dryRun) {
    const estimate = await estimateQcow2(image, context);
    const before = hostAllocatedBytes(image.path);
    return {
      plan: qcow2Plan(image.path, estimate.session.steps),
      hostBytesBefore: before,
      hostBytesAfter: before - estimate.reclaimableBytes,
      freedBytes: estimate.reclaimableBytes,
      heldByLowerLayersBytes: estimate.heldByLowerLayersBytes,
      warnings: [...estimate.warnings, ...estimate.session.skipped.map(capitalize)],
      notes: [],
    };
  }
  const result = await compactQcow2(image, context);
  return {
    plan: qcow2Plan(image.path, result.session.steps),
    hostBytesBefore: result.hostBytesBefore,
    hostBytesAfter: result.hostBytesAfter,
    freedBytes: Math.max(0, result.hostBytesBefore - result.hostBytesAfter),
    warnings: result.session.skipped.map(capitalize),
    notes: [...layersNote, ...(result.truncatedBytes > 0 ? [`The file was shortened by ${formatBytes(result.truncatedBytes)}.`] : [])],
  };
}

async function runPloop(opened: PloopImage, dryRun: boolean, context: Context): Promise<Outcome> {
  const notes: string[] = [];
  const folder = opened.folder;
  const image = recoveredForCompact(opened.handle, !dryRun, notes);
  const top = image.deltas[0]!;
  const before = hostBytesOf(top);
  const estimate = await estimatePloop(image, context);
  const plan = [
    `Compact the ploop image "${folder}" in place: drop ${estimate.plan.releasedClusters} free cluster(s) from the top delta and shorten it.`,
    ...estimate.session.steps.map((s, i) => `  ${i + 1}. ${describeTrimStep(s)} (in a throwaway overlay, to find the free clusters)`),
    ...describePloopSteps(estimate.plan).map((s, i) => `  ${estimate.session.steps.length + i + 1}. ${s}`),
  ];
  const warnings = estimate.session.skipped.map(capitalize);
  if (!dryRun && planChanges(estimate.plan)) runPloopCompact(image, estimate.plan, context);
  const after = dryRun ? before - estimate.reclaimableBytes : hostBytesOf(top);
  return { plan, hostBytesBefore: before, hostBytesAfter: after, freedBytes: Math.max(0, before - after), heldByLowerLayersBytes: estimate.heldByLowerLayersBytes, warnings, notes };
}

export async function compact(hdd: string, dryRun: boolean, context: Context): Promise<ChangeReport> {
  // --dry-run takes the same exclusive lock: the estimate must not race a change.
  const session = await openOrDelegate(hdd, { kind: 'compact' }, { dryRun }, context);
  if ('report' in session) return session.report;
  const opened = session.opened;
  try {
    const image = opened.image;
    if (!dryRun) {
      // Under the exclusive lock no run of ours is alive: overlays beside the image are a killed run's leftovers.
      const dataFile = image.format === 'qcow2' ? image.path : image.deltas[0]!;
      removeStaleTemporaries(dataFile, 'compact-overlay');
    }
    const outcome = image.format === 'qcow2' ? await runQcow2(image, dryRun, context) : await runPloop(image, dryRun, context);
    const unchanged = outcome.freedBytes === 0;
    const verb = dryRun ? 'would free' : 'freed';
    const messages = [
      ...outcome.notes,
      `Compacted "${hdd}": ${verb} ${formatBytes(outcome.freedBytes)} of host space (${formatBytes(outcome.hostBytesBefore)} before, ${formatBytes(outcome.hostBytesAfter)} after).`,
    ];
    if (unchanged && !dryRun) messages[messages.length - 1] = `"${hdd}" is already compact: no host space was freed (${formatBytes(outcome.hostBytesAfter)} in use).`;
    const facts: ChangeFacts = {
      sizeBeforeBytes: image.virtualSizeBytes,
      sizeAfterBytes: image.virtualSizeBytes,
      hostBytesBefore: outcome.hostBytesBefore,
      hostBytesAfter: outcome.hostBytesAfter,
      freedBytes: outcome.freedBytes,
    };
    if (outcome.heldByLowerLayersBytes !== undefined) facts.heldByLowerLayersBytes = outcome.heldByLowerLayersBytes;
    return { kind: 'change', operation: 'compact', dryRun, unchanged, plan: outcome.plan, messages, facts, warnings: outcome.warnings };
  } finally {
    opened.lock.release();
  }
}
