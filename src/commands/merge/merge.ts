// merge: deletes the internal snapshots of a qcow2 image, keeping its current state; dispatches --external and ploop.
import type { MergeRequest } from '../request.js';
import type { Context } from '../context.js';
import type { ChangeReport } from '../report.js';
import { openOrDelegate } from '../online.js';
import type { Qcow2Image } from '../../formats/image.js';
import { check, infoChain, freeLeaks, repairCopiedFlags, type Snapshot } from '../../formats/qcow2/qemu-img.js';
import { describePlan, executePlan, type Plan } from '../../plan/plan.js';
import { ImageInvalid, ToolError } from '../../util/errors.js';
import { formatBytes } from '../../util/units.js';
import { requireConsistentQcow2 } from '../../formats/qcow2/consistency.js';
import { deleteSnapshot } from '../../formats/qcow2/changes.js';
import { mergeExternal } from './external.js';
import { mergePloop } from './ploop.js';
import { hostAllocatedBytes } from '../../util/space.js';

export type SnapshotStep =
  | { kind: 'repair-leaks'; path: string; leaks: number }
  | { kind: 'repair-copied-flags'; path: string; clusters: number; leaks: number }
  | { kind: 'delete-snapshot'; path: string; id: string; name: string };

export function describeSnapshotStep(step: SnapshotStep): string {
  if (step.kind === 'repair-leaks') {
    return `Free the ${step.leaks} leaked cluster(s) of ${step.path} (qemu-img check -r leaks); only refcounts change.`;
  }
  if (step.kind === 'repair-copied-flags') {
    return `Set the OFLAG_COPIED bit of ${step.clusters} cluster(s) of ${step.path} from its refcount and free ${step.leaks} leaked cluster(s) (qemu-img check -r all; an interrupted snapshot deletion leaves both, and nothing else is wrong); no guest byte changes.`;
  }
  return `Delete the internal snapshot ${step.id} ("${step.name}") of ${step.path}; the current state is not touched.`;
}

/**
 * qemu-img snapshot -d finds a snapshot by NAME only (qemu 7.2 bdrv_snapshot_find), taking the first one in
 * table order. Deleting in table order therefore always removes the intended snapshot, even when names repeat
 * or a name looks like another snapshot's id. Leaked clusters, which a merge killed halfway leaves behind,
 * are freed first, so that rerunning merge is the whole recovery; so are the wrong OFLAG_COPIED bits a deletion
 * stopped by a kill or a power cut leaves (B16 in docs/reliability.md).
 */
export function planSnapshotMerge(path: string, snapshots: readonly Snapshot[], leaks = 0, copiedFlagErrors = 0): Plan<SnapshotStep> {
  const repair: SnapshotStep[] =
    copiedFlagErrors > 0
      ? [{ kind: 'repair-copied-flags', path, clusters: copiedFlagErrors, leaks }]
      : leaks > 0
        ? [{ kind: 'repair-leaks', path, leaks }]
        : [];
  const deletions: SnapshotStep[] = snapshots.map((s) => ({ kind: 'delete-snapshot', path, id: s.id, name: s.name }));
  let summary = `Delete all ${snapshots.length} internal snapshot(s) of ${path}, keeping its current state.`;
  if (snapshots.length === 0) {
    summary =
      repair.length > 0
        ? `${path} has no internal snapshots; repair what an interrupted run left (${copiedFlagErrors > 0 ? `${copiedFlagErrors} wrong OFLAG_COPIED bit(s), ` : ''}${leaks} leaked cluster(s)).`
        : `${path} has no internal snapshots; nothing to merge.`;
  }
  return { summary, steps: [...repair, ...deletions] };
}

/** The repair, then a check that it left nothing: anything else qemu-img would have rebuilt stops the merge. */
async function repairCopiedFlagsOnly(path: string): Promise<void> {
  await repairCopiedFlags(path);
  const after = await check(path, 'qcow2');
  if (after.corruptions > 0 || after.checkErrors > 0) {
    throw new ImageInvalid(`qemu-img check -r all left ${after.corruptions} corruption(s) in "${path}"; nothing else was changed. Repair it by hand (after a backup) and run merge again`);
  }
}

async function mergeSnapshots(image: Qcow2Image, request: MergeRequest, context: Context): Promise<ChangeReport> {
  const { leaks, copiedFlagErrors } = await requireConsistentQcow2(image.path, { acceptCopiedFlags: true });
  const plan = planSnapshotMerge(image.path, image.snapshots, leaks, copiedFlagErrors);
  const warnings: string[] = [];
  const lines = describePlan(plan, describeSnapshotStep);
  const hostBytesBefore = hostAllocatedBytes(image.path);
  const messages: string[] = [];
  if (image.chain.length > 1) {
    messages.push(`${image.path} also has a backing chain of ${image.chain.length - 1} file(s); "merge --external" folds it into one image.`);
  }
  const sizeBytes = image.virtualSizeBytes;
  const facts = { path: image.path, snapshots: image.snapshots.map((s) => ({ id: s.id, name: s.name })), sizeBeforeBytes: sizeBytes, sizeAfterBytes: sizeBytes, hostBytesBefore };
  if (plan.steps.length === 0 || request.dryRun) {
    return {
      kind: 'change', operation: 'merge', dryRun: request.dryRun, unchanged: plan.steps.length === 0, plan: lines,
      messages: plan.steps.length === 0 ? [plan.summary, ...messages] : messages,
      facts: { ...facts, hostBytesAfter: hostBytesBefore, freedBytes: 0 }, warnings,
    };
  }
  let done = 0;
  context.progress.step('Deleting internal snapshots');
  await executePlan(plan, describeSnapshotStep, async (step) => {
    // Each step runs to its end even when interrupted (killing qemu-img amid a deletion leaks clusters).
    if (step.kind === 'repair-leaks') await freeLeaks(step.path);
    else if (step.kind === 'repair-copied-flags') await repairCopiedFlagsOnly(step.path);
    else await deleteSnapshot(step.path, step.name);
    context.progress.update(++done / plan.steps.length);
  });
  context.progress.done();
  const left = (await infoChain(image.path, 'qcow2', true))[0]!.snapshots;
  if (left.length > 0) {
    throw new ToolError('tool-failed', `qemu-img left ${left.length} snapshot(s) in "${image.path}" (ids ${left.map((s) => s.id).join(', ')}); the current state is intact, run merge again.`);
  }
  const hostBytesAfter = hostAllocatedBytes(image.path);
  const freed = Math.max(0, hostBytesBefore - hostBytesAfter);
  const what = copiedFlagErrors > 0 ? `Repaired what an interrupted run left (${copiedFlagErrors} OFLAG_COPIED bit(s), ${leaks} leaked cluster(s)) and deleted` : leaks > 0 ? `Freed ${leaks} leaked cluster(s) and deleted` : 'Deleted';
  messages.unshift(`${what} ${image.snapshots.length} internal snapshot(s) of ${image.path}; the current state is unchanged and ${formatBytes(freed)} of host space was freed.`);
  return {
    kind: 'change', operation: 'merge', dryRun: false, unchanged: false, plan: lines, messages,
    facts: { ...facts, hostBytesAfter, freedBytes: freed }, warnings,
  };
}

/** Opens the image once; the format and --external pick the branch, which works on the opened session. */
export async function runMerge(request: MergeRequest, context: Context): Promise<ChangeReport> {
  const session = await openOrDelegate(request.hdd, { kind: 'merge' }, { ploopChange: 'merge', dryRun: request.dryRun }, context);
  if ('report' in session) return session.report;
  const opened = session.opened;
  try {
    if (opened.image.format === 'ploop') return await mergePloop(opened, request, context);
    if (request.external) return await mergeExternal(opened, request, context);
    return await mergeSnapshots(opened.image, request, context);
  } finally {
    opened.lock.release();
  }
}
