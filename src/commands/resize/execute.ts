// Walks a resize plan: qemu-img for the image's size, qemu-io for table and swap sectors, the appliance (on the
// overlay) for filesystems. The appliance is closed before qemu-io or the commit touch the overlay (QEMU locks).
import type { Context } from '../context.js';
import { type DiskFacts, readAllocation } from './facts.js';
import { assertCutIsFree, dataEndBytes, proofOf } from './minimum.js';
import { type ResizePlan, type ResizeStep, describeStep } from './plan.js';
import { Overlay, qemuCommitInto, type Committer } from './overlay.js';
import { commitOverlayIntoPloop, writePloopSectors } from './ploop.js';
import { executePlan } from '../../plan/plan.js';
import { shielded, throwIfCancelled } from '../../util/cancel.js';
import { GuestSession } from '../../guest/session.js';
import { qemuImg } from '../../formats/qcow2/qemu-img.js';
import { type DiskFile, imageSource, writeSectors } from '../../partitions/io.js';
import { readTable } from '../../partitions/table.js';
import { PROBE_BYTES, identify } from '../../fs/registry.js';
import { layoutOf, recoverPloopImage, type PloopImage } from '../../formats/ploop/image.js';
import { releaseBeyond } from '../../formats/ploop/compact.js';
import { executeResize as executePloopResize, planResize as planPloopResize } from '../../formats/ploop/resize.js';
import { filesystemFor } from '../../fs/registry.js';

/** What the executor holds across steps; the command closes and discards it on every exit path. */
export interface ResizeState {
  overlay?: Overlay;
  guest?: GuestSession;
  /** Set after the image grew and while that grow can still be undone (nothing on the image refers to it yet). */
  grownFrom?: number;
}

/**
 * Undoes the image grow after a failure before the commit: the new space is outside every partition and the
 * image's table still describes the old size (its changes lived in the overlay), so shrinking back is exact.
 * Not possible after an interruption (no new subprocess may start then); the next run completes instead.
 */
export async function rollbackGrow(facts: DiskFacts, state: ResizeState, context: Context): Promise<boolean> {
  const from = state.grownFrom;
  if (from === undefined) return false;
  delete state.grownFrom;
  await closeGuest(state);
  state.overlay?.discard();
  delete state.overlay;
  // Even after SIGINT/SIGTERM: the grown space is still outside every partition, and shrinking it back is quick.
  await shielded(() => resizeImage(facts, from, 'shrink', false, context));
  return true;
}

/** ploop: the native engine grows or shrinks the top delta and then the descriptor (crash-safe ordering there). */
function resizePloop(image: PloopImage, toBytes: number, preallocate: boolean, context: Context): void {
  if (image.pendingRecovery.length > 0) {
    context.notice(`Completing an interrupted operation on the ploop image first: ${image.pendingRecovery.join('; ')}.`);
    recoverPloopImage(image);
  }
  const lower = image.deltas.slice(1).map((_, index) => layoutOf(image, index + 1));
  if (toBytes < image.sizeBytes) releaseBeyond(image, lower, toBytes);
  const plan = planPloopResize(layoutOf(image, 0), lower, toBytes, { preallocated: preallocate });
  executePloopResize(image, plan, { progress: (done, total) => total > 0 && context.progress.update(done / total) });
}

async function resizeImage(facts: DiskFacts, toBytes: number, mode: 'grow' | 'shrink', preallocate: boolean, context: Context): Promise<void> {
  if (facts.image.format === 'ploop') {
    context.progress.step(mode === 'grow' ? 'Growing the image' : 'Shrinking the image');
    resizePloop(facts.image.handle, toBytes, preallocate, context);
    context.progress.done();
    return;
  }
  const args = ['resize', '-f', 'qcow2'];
  if (mode === 'shrink') args.push('--shrink');
  if (preallocate) args.push('--preallocation=falloc');
  args.push(facts.image.path, String(toBytes));
  context.progress.step(mode === 'grow' ? 'Growing the image' : 'Shrinking the image');
  // A resize killed halfway leaks the clusters of its new tables: let it finish, the rollback undoes it.
  await qemuImg(args, { timeoutMs: 60 * 60_000, untorn: true });
  context.progress.done();
}

/**
 * The last guard of every shrink, independent of the planner (a planner bug must not cut data either): reads the
 * table, the content and the allocation as they are on the image now, right before the cut, and refuses a size
 * below the end of allocated data that no structure proves free. The rollback of a grow does not pass here: it
 * cuts only the space this run added.
 */
async function assertShrinkCutsNoData(facts: DiskFacts, toBytes: number): Promise<void> {
  const source = imageSource(facts.disk, facts.sizeBytes);
  const table = await readTable(source);
  const content = table.kind === 'none' ? identify(await source.read(0, PROBE_BYTES)) : undefined;
  const { allocated } = await readAllocation(facts.image);
  const name = facts.image.format === 'qcow2' ? facts.image.path : facts.image.folder;
  assertCutIsFree(toBytes, dataEndBytes(allocated, proofOf(table, content, 'as-is')), name);
}

export async function closeGuest(state: ResizeState): Promise<void> {
  const guest = state.guest;
  delete state.guest;
  await guest?.close();
}

export async function launchGuest(state: ResizeState, drive: DiskFile, readonly: boolean, context: Context): Promise<GuestSession> {
  if (state.guest) return state.guest;
  context.progress.step('Starting the appliance');
  drive.verify?.('the appliance');
  state.guest = await GuestSession.launch([{ path: drive.path, format: drive.format, readonly }], { onNotice: context.notice });
  context.progress.done();
  return state.guest;
}

/** How an overlay reaches this image: qemu-img commit for qcow2, a native cluster copy for ploop. */
export function committerFor(facts: Pick<DiskFacts, 'image'>, context: Context): Committer {
  const image = facts.image;
  if (image.format === 'qcow2') return qemuCommitInto(image.path);
  return (overlayPath, progress) => commitOverlayIntoPloop(overlayPath, image.handle, progress, context.notice);
}

/** The overlay of this image; on a sparse qcow2 its zero-filled clusters are committed as zeros (resize/overlay.ts). */
export function beginOverlay(facts: Pick<DiskFacts, 'image' | 'disk' | 'plain'>, sizeBytes: number, context: Context): Promise<Overlay> {
  facts.disk.verify?.('QEMU (the overlay)');
  return Overlay.begin(facts.disk, sizeBytes, committerFor(facts, context), { sparseZeroes: facts.image.format === 'qcow2' && !facts.plain });
}

export async function executeResize(plan: ResizePlan, facts: DiskFacts, state: ResizeState, context: Context): Promise<void> {
  const current = (): DiskFile => state.overlay?.disk ?? facts.disk;
  const runStep = async (step: ResizeStep): Promise<void> => {
    switch (step.kind) {
      case 'grow-image':
        await resizeImage(facts, step.toBytes, 'grow', step.preallocate, context);
        state.grownFrom = step.fromBytes;
        return;
      case 'begin-overlay':
        state.overlay ??= await beginOverlay(facts, Math.max(plan.toBytes, plan.fromBytes), context);
        return;
      case 'shrink-content':
      case 'grow-content': {
        const guest = await launchGuest(state, current(), false, context);
        const fs = filesystemFor(step.type);
        context.progress.step(step.kind === 'grow-content' ? `Growing ${fs.noun}` : `Shrinking ${fs.noun}`);
        if (step.kind === 'grow-content') await fs.grow({ guest, device: step.device });
        else await fs.shrink({ guest, device: step.device }, step.toBytes);
        await guest.call('sync');
        context.progress.done();
        return;
      }
      case 'write-table':
        await closeGuest(state);
        // A signal that came before the table is touched still rolls the grow back. From here to the start of
        // the (untorn) write there is no await, so none can slip in between.
        throwIfCancelled();
        if (!state.overlay) delete state.grownFrom;
        if (!state.overlay && facts.image.format === 'ploop') return writePloopSectors(facts.image.handle, step.writes, context.notice);
        return writeSectors(current(), step.writes);
      case 'resize-swap': {
        await closeGuest(state);
        const writes = facts.content!.fs.resizeNative!(facts.head, step.toBytes).map((w) => ({ ...w, offsetBytes: w.offsetBytes + step.offsetBytes, what: 'swap header' }));
        return writeSectors(current(), writes);
      }
      case 'commit-overlay':
        await closeGuest(state);
        throwIfCancelled(); // as for write-table: before the commit begins, the grow can still be rolled back
        delete state.grownFrom;
        await state.overlay!.commit(context.progress);
        delete state.overlay;
        return;
      case 'shrink-image':
        await closeGuest(state);
        await assertShrinkCutsNoData(facts, step.toBytes);
        return resizeImage(facts, step.toBytes, 'shrink', false, context);
    }
  };
  await executePlan(plan, describeStep, runStep);
}
