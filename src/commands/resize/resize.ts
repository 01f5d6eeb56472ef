// resize --size [--resize_partition]: gather facts, measure the content when it must shrink, plan, then (unless
// --dry-run) execute; the change report gives sizes and host allocation before and after, and the steps.
import type { Context } from '../context.js';
import type { ResizeRequest } from '../request.js';
import type { ChangeReport } from '../report.js';
import { openOrDelegate } from '../online.js';
import { assertConsistent, readDiskFacts, diskFile, refuseSnapshots } from './facts.js';
import { measureContent, sizeLimits } from './info.js';
import { contentMustShrink, describeStep, planResize, type ResizePlan, type SizeLimits } from './plan.js';
import { checkFreeSpace, commitPathFor, finishInterruptedCommit, staleOverlays } from './overlay.js';
import { existsSync } from 'node:fs';
import { type ResizeState, beginOverlay, closeGuest, committerFor, executeResize, launchGuest, rollbackGrow } from './execute.js';
import { describePloopEngine } from './ploop.js';
import type { Image } from '../../formats/image.js';
import { removeIfExists } from '../../util/atomic.js';
import { MiB, formatBytes } from '../../util/units.js';
import { formatExactSize } from './minimum.js';
import { requireFreeSpace } from '../../util/space.js';
import { debug } from '../../util/log.js';
import { repairLeaks } from '../../formats/qcow2/qemu-img.js';

/** The plan's account of the ploop rule, so that a dry run says why the partition moves without the flag. */
const PLOOP_FOLLOWS = 'As ploop resize does, the last partition and its filesystem follow the disk of a ploop image (--resize_partition is implied).';

/** Worst case of the overlay: a grow writes new metadata (about 2 % of the new space), a shrink moves data. */
export function overlayBudgetBytes(image: Image, plan: ResizePlan): number {
  const grown = Math.max(0, plan.toBytes - plan.fromBytes);
  const cut = Math.max(0, plan.fromBytes - plan.toBytes);
  return 64 * MiB + Math.ceil(grown * 0.02) + Math.min(cut, image.hostBytes);
}

/** Host bytes a grow writes: all of the new space on a plain image, else table growth (BAT, L1, refcounts) and the GPT. */
function growthHostBytes(plan: ResizePlan): number {
  const grow = plan.steps.find((step) => step.kind === 'grow-image');
  if (!grow || grow.kind !== 'grow-image') return 0;
  const grown = grow.toBytes - grow.fromBytes;
  return grow.preallocate ? grown : Math.ceil(grown / 256) + 2 * MiB;
}

/**
 * Said when the grow could not be undone after a failure: the image keeps its grown size, but its table and data
 * are the former ones (every other change lived in the overlay), so shrinking back to the former size is safe.
 */
export function rollbackFailedMessage(hdd: string, fromBytes: number, grownBytes: number, cause: unknown): string {
  const reason = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  return (
    `Undoing the grow failed too (${reason}): the image stays ${formatBytes(grownBytes)} instead of its former ${formatBytes(fromBytes)}; its partitions and data are as before, ` +
    `and the added space lies outside every partition. To return to the former size, run: prl_disk_tool resize --hdd "${hdd}" --size ${formatExactSize(fromBytes)} ` +
    `(or, once the cause of the failure is fixed, run the same resize again).`
  );
}

export async function resize(request: ResizeRequest, context: Context): Promise<ChangeReport> {
  const session = await openOrDelegate(request.hdd, { kind: 'resize', sizeBytes: request.sizeBytes }, { dryRun: request.dryRun }, context);
  if ('report' in session) return session.report;
  const opened = session.opened;
  const state: ResizeState = {};
  try {
    let image = opened.image;
    if (!request.dryRun) {
      if (await finishInterruptedCommit(diskFile(image), context.progress, committerFor({ image }, context))) {
        context.notice('A previous resize had been interrupted while committing its changes; that commit was completed first.');
        image = await opened.reload();
      }
      for (const stale of staleOverlays(diskFile(image))) {
        debug(`removing the overlay of an abandoned resize: ${stale}`);
        removeIfExists(stale);
      }
    }
    await assertConsistent(image, request.dryRun ? 'query' : 'modify', context.notice);
    if (!request.dryRun && image.format === 'ploop') image = await opened.reload();
    const hostBytesBefore = image.hostBytes;
    refuseSnapshots(image);
    const facts = await readDiskFacts(image);
    // ploop: the last partition and its filesystem always follow the disk, as the original's `ploop resize` did
    // (docs/resize.md, "ploop: the partition follows").
    const impliedByFormat = image.format === 'ploop' && !request.resizePartition;
    const resizePartition = request.resizePartition || impliedByFormat;
    let limits: SizeLimits | undefined;
    if (resizePartition && contentMustShrink(facts, request.sizeBytes)) {
      // The appliance that measures the content is the one that then shrinks it: on the overlay, or read-only
      // on the image for a dry run.
      const needsGuest = facts.content!.fs.measuresInGuest;
      if (needsGuest && !request.dryRun) {
        checkFreeSpace(facts.disk, 64 * MiB + Math.min(facts.sizeBytes - request.sizeBytes, image.hostBytes));
        state.overlay = await beginOverlay(facts, facts.sizeBytes, context);
      }
      const drive = state.overlay?.disk ?? facts.disk;
      const measured = await measureContent(facts, () => launchGuest(state, drive, request.dryRun, context));
      limits = sizeLimits(facts, measured);
      if (request.dryRun) await closeGuest(state);
    }
    const plan = planResize(facts, request.sizeBytes, { resizePartition, impliedByFormat, ...(limits ? { limits } : {}) });
    // Recovery is part of the plan: a dry run shows it, and the plan was made from the state it leaves.
    const pendingCommit = existsSync(commitPathFor(diskFile(image))) ? [`an earlier resize stopped while committing ${commitPathFor(diskFile(image))}; that commit is completed`] : [];
    const recovery = request.dryRun ? [...pendingCommit, ...opened.pendingRecovery].map((finding) => `Complete an interrupted operation first: ${finding}.`) : [];
    const lines = [...recovery, ...(impliedByFormat && plan.steps.length > 0 ? [PLOOP_FOLLOWS] : []), plan.summary];
    for (const [index, step] of plan.steps.entries()) {
      lines.push(`  ${index + 1}. ${describeStep(step)}`);
      // ploop: the engine's own steps, so that the dry run shows what will be written into the delta.
      if (image.format === 'ploop' && (step.kind === 'grow-image' || step.kind === 'shrink-image')) {
        const preallocate = step.kind === 'grow-image' && step.preallocate;
        lines.push(...describePloopEngine(image.handle, step.toBytes, preallocate).map((line, sub) => `     ${String.fromCharCode(97 + sub)}. ${line}`));
      }
    }
    // Every check runs under --dry-run too: a dry run that passes must not be refused by the real run.
    const growth = growthHostBytes(plan);
    if (growth > 0) requireFreeSpace(facts.disk.path, growth, 'growing the image');
    if (plan.usesOverlay && !state.overlay) checkFreeSpace(facts.disk, overlayBudgetBytes(image, plan));
    const facts0 = { sizeBeforeBytes: facts.sizeBytes, sizeAfterBytes: request.sizeBytes, hostBytesBefore };
    if (request.dryRun || plan.steps.length === 0) {
      return {
        kind: 'change',
        operation: 'resize',
        dryRun: request.dryRun,
        unchanged: plan.steps.length === 0,
        plan: lines,
        messages: [plan.summary],
        facts: { ...facts0, sizeAfterBytes: plan.steps.length === 0 ? facts.sizeBytes : request.sizeBytes, hostBytesAfter: hostBytesBefore, steps: plan.steps.map(describeStep) },
        warnings: [...plan.warnings, ...(limits?.warnings ?? [])],
      };
    }
    try {
      await executeResize(plan, facts, state, context);
    } catch (error) {
      // What the rollback did belongs to the failure: it goes out with the error, on stderr.
      let sequel: string | undefined;
      try {
        if (await rollbackGrow(facts, state, context)) sequel = `The image was shrunk back to its former ${facts.sizeBytes} bytes; nothing else had reached it.`;
      } catch (rollbackError) {
        sequel = rollbackFailedMessage(request.hdd, facts.sizeBytes, plan.toBytes, rollbackError);
      }
      if (sequel !== undefined && error instanceof Error) error.message = `${error.message.trimEnd()}\n${sequel}`;
      throw error;
    }
    // A cut amid an earlier run's metadata write can leave a refcount for a cluster past the file's end, which
    // qemu-img check cannot see until this run's writes extend the file over it (B17): look again now.
    if (image.format === 'qcow2') {
      const freed = await repairLeaks(image.path);
      if (freed > 0) context.notice(`Freed ${freed} leaked cluster(s) that an interrupted write had left in "${image.path}".`);
    }
    const after = await opened.reload();
    return {
      kind: 'change',
      operation: 'resize',
      dryRun: false,
      unchanged: false,
      plan: lines,
      messages: [`The disk was resized from ${formatBytes(facts.sizeBytes)} to ${formatBytes(after.virtualSizeBytes)}.`, ...plan.advice],
      facts: { ...facts0, sizeAfterBytes: after.virtualSizeBytes, hostBytesAfter: after.hostBytes, steps: plan.steps.map(describeStep) },
      warnings: [...plan.warnings, ...(limits?.warnings ?? [])],
    };
  } finally {
    await closeGuest(state);
    state.overlay?.discard();
    opened.lock.release();
  }
}
