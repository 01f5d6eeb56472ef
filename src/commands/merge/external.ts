// merge --external: makes the top standalone. When every lower layer belongs to the image alone, the chain is
// folded into its base, which then takes the top's name; when any may be shared (a linked clone's template), its
// data is pulled up into the top instead and the shared files are only read (docs/security.md, rule 8).
// Why either order keeps the content seen through --hdd unchanged at every instant: docs/merge-convert.md.
import { dirname } from 'node:path';
import type { Context } from '../context.js';
import type { ChangeReport } from '../report.js';
import type { MergeRequest } from '../request.js';
import type { OpenedImage } from '../open.js';
import { readChain, readLayer, requireNoWriterConflict, type Layer } from '../../formats/qcow2/layers.js';
import { requireConsistentQcow2 } from '../../formats/qcow2/consistency.js';
import { readAllocation } from '../../formats/qcow2/allocation.js';
import { sameFilesystem } from '../../util/host-files.js';
import { describePlan, executePlan, type Plan } from '../../plan/plan.js';
import { acquireLock, type HeldLock } from '../../util/lock.js';
import { onExit } from '../../util/cancel.js';
import { findLeftovers, newLeftoversNote, type Leftovers } from './leftovers.js';
import { describeExternalStep, runExternalStep, type ExternalStep } from './external-steps.js';
import { placeLayers, type Placement } from './external-layers.js';
import { ImageInvalid, NotSupported, Refused } from '../../util/errors.js';
import { freeBytesAt, hostAllocatedBytes, requireSpace } from '../../util/space.js';

export { describeExternalStep, type ExternalStep } from './external-steps.js';

export interface ChainFacts {
  /** Top first. */
  chain: (Layer & { hostBytes: number })[];
  /** Free bytes in the base's filesystem. */
  freeBytesAtBase: number;
  /** Whether the base can be renamed over the top atomically. */
  baseOnTopFilesystem: boolean;
  /** What an interrupted run left beside the top, and where this run's note goes. */
  leftovers?: Leftovers;
  note?: string;
  /** For each lower layer (top excluded), whether it belongs to the image alone; all own when left out. */
  placements?: Placement[];
  /** Free bytes in the top's filesystem (a pull-up grows the top); assumed enough when left out. */
  freeBytesAtTop?: number;
  /** The base is laid out as qemu-img preallocates (a plain image): it must stay fully allocated. */
  basePreallocated?: boolean;
}

/** Pure: the steps of the merge, or a refusal saying what to do instead. */
export function planExternalMerge(facts: ChainFacts): Plan<ExternalStep> {
  const { chain } = facts;
  const top = chain[0]!;
  const stale = facts.leftovers?.notes ?? [];
  const forget: ExternalStep[] = stale.length > 0 ? [{ kind: 'forget-notes', notes: stale }] : [];
  if (chain.length === 1) {
    const leftovers = facts.leftovers?.paths ?? [];
    if (stale.length === 0) return { summary: `${top.path} has no backing file; nothing to merge.`, steps: [] };
    return {
      summary:
        leftovers.length > 0
          ? `${top.path} has no backing file; remove the ${leftovers.length} intermediate image(s) an interrupted merge --external left.`
          : `${top.path} has no backing file; remove the note(s) an interrupted merge --external left.`,
      steps: [...leftovers.map((path): ExternalStep => ({ kind: 'remove', path })), ...forget],
    };
  }
  const base = chain[chain.length - 1]!;
  const placements = facts.placements ?? chain.slice(1).map((): Placement => ({ own: true }));
  const shared = chain.slice(1).filter((_, i) => !placements[i]!.own);
  for (const layer of chain) {
    if (layer.corrupt) throw new ImageInvalid(`The qcow2 image "${layer.path}" of the chain is marked corrupt; repair it with "qemu-img check -r all" first`);
    if (layer.unsupported) throw new NotSupported(`"${layer.path}" uses ${layer.unsupported}, which merge --external does not handle. Nothing was changed.`);
    // A shared layer is only read, through its current state: its own snapshots do not matter.
    if (layer.snapshots > 0 && !shared.includes(layer)) {
      throw new Refused(
        `"${layer.path}" has ${layer.snapshots} internal snapshot(s), which the merged image could not keep consistently; delete them first with "prl_disk_tool merge --hdd ${layer.path}". Nothing was changed.`,
      );
    }
  }
  const ownLower = chain.slice(1).filter((_, i) => placements[i]!.own).map((layer) => layer.path);
  const note = ownLower.length > 0 ? facts.note : undefined;
  const removals = (resultFile: string, paths: string[]): ExternalStep[] =>
    paths.length === 0
      ? []
      : [
          ...(note === undefined ? [] : [{ kind: 'note-intermediates', note, top: top.path, resultFile, paths } satisfies ExternalStep]),
          ...paths.map((path): ExternalStep => ({ kind: 'remove', path })),
          ...(note === undefined ? [] : [{ kind: 'forget-notes', notes: [note] } satisfies ExternalStep]),
        ];
  if (shared.length > 0) return planPullUp(facts, shared, ownLower, forget, removals(top.path, ownLower));
  // A layer smaller than the top hides whatever lies below past its end (reads as zeros); committing through
  // it is not guaranteed to reproduce that, so such chains are refused. The base may be smaller (commit grows it).
  const short = chain.slice(1, -1).find((layer) => layer.virtualSizeBytes < top.virtualSizeBytes);
  if (short) throw new NotSupported(`The intermediate image "${short.path}" is smaller than the top "${top.path}"; merge --external does not fold such chains. Nothing was changed.`);
  if (!facts.baseOnTopFilesystem) {
    throw new NotSupported(
      `The base "${base.path}" is on another filesystem than "${top.path}", so the merged base cannot take the top's name atomically; make a standalone copy with "qemu-img convert -f qcow2 -O qcow2" instead. Nothing was changed.`,
    );
  }
  const dataBytes = chain.slice(0, -1).reduce((sum, layer) => sum + layer.hostBytes, 0);
  requireSpace(dirname(base.path), facts.freeBytesAtBase, dataBytes, `the base "${base.path}" to take the overlays' data`);
  const baseName = chain[chain.length - 2]!.backingPath ?? base.path;
  // Zeros an overlay holds as data would be copied into the base as data (issue 19); a plain base keeps them as
  // data anyway, and a v2 layer has no zero clusters to turn them into.
  const overlays = chain.slice(0, -1).filter((layer) => layer.zeroClusters);
  const steps: ExternalStep[] = [...forget];
  if (!facts.basePreallocated && overlays.length > 0) {
    const scanned = overlays.reduce((sum, layer) => sum + layer.hostBytes, 0);
    steps.push({ kind: 'zero-overlays', overlays: overlays.map((layer) => ({ path: layer.path, clusterBytes: layer.clusterBytes })), dataBytes: scanned });
  }
  steps.push(
    { kind: 'clear-under-zeros', top: top.path, base: base.path, overlays: chain.length - 1 },
    { kind: 'commit', top: top.path, base: base.path, baseName, overlays: chain.length - 1, dataBytes },
  );
  if (base.virtualSizeBytes > top.virtualSizeBytes) steps.push({ kind: 'shrink-base', base: base.path, sizeBytes: top.virtualSizeBytes });
  if (facts.basePreallocated) steps.push({ kind: 'reallocate-base', base: base.path });
  // The note goes down before the rename (after it, the intermediates are no longer reachable from the top).
  const after = removals(base.path, ownLower.slice(0, -1));
  const noted = after[0]?.kind === 'note-intermediates' ? after.splice(0, 1) : [];
  steps.push(...noted, { kind: 'replace-top', base: base.path, top: top.path }, ...after);
  return {
    summary: `Fold the ${chain.length} images of the backing chain of ${top.path} into one standalone image at ${top.path}: every lower layer lives in the image's folder and nothing else uses it, so the base takes the top's name.`,
    steps,
  };
}

/** The top takes the data of every lower layer; the shared ones are only read, the image's own are removed after. */
function planPullUp(facts: ChainFacts, shared: ChainFacts['chain'], ownLower: string[], forget: ExternalStep[], removals: ExternalStep[]): Plan<ExternalStep> {
  const top = facts.chain[0]!;
  const lower = facts.chain.slice(1);
  const dataBytes = Math.min(lower.reduce((sum, layer) => sum + layer.hostBytes, 0), top.virtualSizeBytes);
  requireSpace(dirname(top.path), facts.freeBytesAtTop ?? Number.MAX_SAFE_INTEGER, dataBytes, `"${top.path}" to take the data of its lower layers`);
  const why = (facts.placements ?? []).flatMap((p, i) => (p.own ? [] : [`${lower[i]!.path}: ${p.why}`]));
  return {
    summary:
      `Make ${top.path} standalone by copying into it what it reads from its backing chain; ${shared.length} lower layer(s) may be used by other images and are left as they are (${why.join('; ')})` +
      (ownLower.length > 0 ? `; the ${ownLower.length} layer(s) only this image uses are removed after.` : '.'),
    steps: [...forget, { kind: 'pull-up', top: top.path, layers: lower.length, dataBytes, shared: shared.map((layer) => layer.path) }, ...removals],
  };
}

export async function mergeExternal(opened: OpenedImage, request: MergeRequest, context: Context): Promise<ChangeReport> {
  const locks: HeldLock[] = [];
  const unregister = onExit(() => locks.forEach((lock) => lock.release()));
  try {
    if (opened.ref.format !== 'qcow2') throw new Error('internal: merge --external on a ploop image');
    const layers = await readChain(opened.ref.path);
    const placements = placeLayers(layers.map((layer) => layer.path));
    // Every lower file the merge changes: our exclusive lock, then QEMU's (a VM using it as its own image or backing
    // file). A shared one is only read: a shared lock, and a read-only open that fails only if something writes it.
    for (const [i, layer] of layers.slice(1).entries()) {
      const own = placements[i]!.own;
      locks.push(acquireLock(layer.path, own ? 'exclusive' : 'shared', layer.path));
      await readLayer(layer.path, false);
      if (own && !layer.dirty) await requireNoWriterConflict(layer.path);
    }
    const leftovers = findLeftovers(opened.ref.path);
    // Files an interrupted run meant to remove are locked like the layers: nobody else may be using them.
    if (layers.length === 1) {
      for (const path of leftovers.paths) {
        locks.push(acquireLock(path, 'exclusive', path));
        await readLayer(path, false);
      }
    }
    const warnings: string[] = [...leftovers.warnings];
    for (const layer of layers) warnings.push(...(await requireConsistentQcow2(layer.path)).warnings);
    const chain = layers.map((layer) => ({ ...layer, hostBytes: hostAllocatedBytes(layer.path) }));
    const base = chain[chain.length - 1]!;
    const basePreallocated = chain.length > 1 && (await readAllocation(base.path, base.virtualSizeBytes)).preallocated;
    const plan = planExternalMerge({
      chain,
      freeBytesAtBase: freeBytesAt(dirname(base.path)),
      baseOnTopFilesystem: chain.length === 1 || sameFilesystem(dirname(base.path), dirname(opened.ref.path)),
      leftovers,
      note: newLeftoversNote(opened.ref.path),
      placements,
      freeBytesAtTop: freeBytesAt(dirname(opened.ref.path)),
      basePreallocated,
    });
    const lines = describePlan(plan, describeExternalStep);
    const hostBytesBefore = chain.reduce((sum, layer) => sum + layer.hostBytes, 0);
    const sizeBytes = chain[0]!.virtualSizeBytes;
    const facts = { path: opened.ref.path, chain: chain.map((layer) => layer.path), sizeBeforeBytes: sizeBytes, sizeAfterBytes: sizeBytes, hostBytesBefore };
    if (plan.steps.length === 0 || request.dryRun) {
      return {
        kind: 'change', operation: 'merge', dryRun: request.dryRun, unchanged: plan.steps.length === 0, plan: lines,
        messages: plan.steps.length === 0 ? [plan.summary] : [], facts: { ...facts, hostBytesAfter: hostBytesBefore }, warnings,
      };
    }
    const identities = new Map(opened.layers.map((layer) => [layer.realPath, layer.identity]));
    await executePlan(plan, describeExternalStep, (step) => runExternalStep(step, context, identities));
    const hostBytesAfter = hostAllocatedBytes(opened.ref.path);
    const removed = plan.steps.filter((s) => s.kind === 'remove').length;
    return {
      kind: 'change', operation: 'merge', dryRun: false, unchanged: false, plan: lines,
      messages:
        chain.length === 1
          ? [`Removed ${removed > 0 ? `${removed} intermediate image(s)` : 'the note(s)'} that an interrupted merge --external left; ${opened.ref.path} was already standalone.`]
          : [
              `Merged the backing chain of ${chain.length} images into ${opened.ref.path}, which no longer has a backing file; ${removed} intermediate file(s) removed.`,
              plan.steps.some((s) => s.kind === 'pull-up')
                ? `The data of the lower layers was copied into ${opened.ref.path}; the layers other images may use were left as they were.`
                : `The base file ${base.path} now lives at ${opened.ref.path}.`,
            ],
      facts: { ...facts, hostBytesAfter, freedBytes: Math.max(0, hostBytesBefore - hostBytesAfter) },
      warnings,
    };
  } finally {
    unregister();
    locks.forEach((lock) => lock.release());
  }
}
