// merge --external: folds a qcow2 backing chain into its base, which then takes the top's name.
// Why this order keeps the content seen through --hdd unchanged at every instant: docs/merge-convert.md.
import { dirname } from 'node:path';
import type { Context } from './context.js';
import type { ChangeReport } from './report.js';
import type { MergeRequest } from './request.js';
import type { OpenedImage } from './open.js';
import { inUseByOther, isLockFailure, readChain, readLayer, requireNoWriterConflict, type Layer } from './merge-chain.js';
import { copyOwnership, requireConsistentQcow2, sameFilesystem } from './merge-host.js';
import { parseProgress, qemuImg, repairLeaks } from '../formats/qcow2/qemu-img.js';
import { describePlan, executePlan, type Plan } from '../plan/plan.js';
import { acquireLock, type HeldLock } from '../util/lock.js';
import { onExit } from '../util/cancel.js';
import { commitRename, fsyncDirectoryOf, fsyncPath, removeIfExists } from '../util/atomic.js';
import { findLeftovers, newLeftoversNote, writeLeftoversNote, type Leftovers } from './merge-leftovers.js';
import { ImageInvalid, NotSupported, Refused, ToolError } from '../util/errors.js';
import { formatBytes } from '../util/units.js';
import { freeBytesAt, hostAllocatedBytes, spaceMargin } from '../util/space.js';

export type ExternalStep =
  | { kind: 'commit'; top: string; base: string; baseName: string; overlays: number; dataBytes: number }
  | { kind: 'shrink-base'; base: string; sizeBytes: number }
  | { kind: 'note-intermediates'; note: string; paths: string[] }
  | { kind: 'replace-top'; base: string; top: string }
  | { kind: 'remove'; path: string }
  | { kind: 'forget-notes'; notes: string[] };

export function describeExternalStep(step: ExternalStep): string {
  switch (step.kind) {
    case 'commit':
      return `Copy the data of ${step.overlays} overlay(s) (at most ${formatBytes(step.dataBytes)}) from ${step.top} down into the base ${step.base} (qemu-img commit), then free any cluster the base leaked; what ${step.top} shows does not change.`;
    case 'shrink-base':
      return `Cut the base ${step.base} to the top's virtual size of ${step.sizeBytes} bytes (the part past it was never visible).`;
    case 'replace-top':
      return `Rename the merged base ${step.base} over ${step.top} (atomic), then make the rename durable.`;
    case 'note-intermediates':
      return `Write down the ${step.paths.length} intermediate image(s) in ${step.note}, so that a rerun removes them if this run stops after the rename.`;
    case 'remove':
      return `Remove the intermediate image ${step.path}, which nothing uses any more.`;
    case 'forget-notes':
      return `Remove the note(s) ${step.notes.join(', ')}.`;
  }
}

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
      summary: `${top.path} has no backing file; remove the ${leftovers.length} intermediate image(s) an interrupted merge --external left.`,
      steps: [...leftovers.map((path): ExternalStep => ({ kind: 'remove', path })), ...forget],
    };
  }
  const base = chain[chain.length - 1]!;
  for (const layer of chain) {
    if (layer.corrupt) throw new ImageInvalid(`The qcow2 image "${layer.path}" of the chain is marked corrupt; repair it with "qemu-img check -r all" first`);
    if (layer.unsupported) throw new NotSupported(`"${layer.path}" uses ${layer.unsupported}, which merge --external does not handle. Nothing was changed.`);
    if (layer.snapshots > 0) {
      throw new Refused(
        `"${layer.path}" has ${layer.snapshots} internal snapshot(s), which the merged image could not keep consistently; delete them first with "prl_disk_tool merge --hdd ${layer.path}". Nothing was changed.`,
      );
    }
  }
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
  const needed = dataBytes + spaceMargin(dataBytes);
  if (facts.freeBytesAtBase < needed) {
    throw new ToolError(
      'no-space',
      `Not enough free space for the base "${base.path}" to take the overlays' data: up to ${formatBytes(needed)} is needed, ${formatBytes(facts.freeBytesAtBase)} is free; free some space and try again. Nothing was changed.`,
    );
  }
  const baseName = chain[chain.length - 2]!.backingPath ?? base.path;
  const steps: ExternalStep[] = [...forget, { kind: 'commit', top: top.path, base: base.path, baseName, overlays: chain.length - 1, dataBytes }];
  if (base.virtualSizeBytes > top.virtualSizeBytes) steps.push({ kind: 'shrink-base', base: base.path, sizeBytes: top.virtualSizeBytes });
  const intermediates = chain.slice(1, -1).map((layer) => layer.path);
  const note = intermediates.length > 0 ? facts.note : undefined;
  if (note !== undefined) steps.push({ kind: 'note-intermediates', note, paths: intermediates });
  steps.push({ kind: 'replace-top', base: base.path, top: top.path });
  for (const path of intermediates) steps.push({ kind: 'remove', path });
  if (note !== undefined) steps.push({ kind: 'forget-notes', notes: [note] });
  return { summary: `Fold the ${chain.length} images of the backing chain of ${top.path} into one standalone image at ${top.path}.`, steps };
}

async function runStep(step: ExternalStep, context: Context): Promise<void> {
  switch (step.kind) {
    case 'commit':
      context.progress.step('Committing the overlays into the base');
      // -b implies -d: the top stays valid (and keeps showing the same content) while the base fills up.
      try {
        await qemuImg(['commit', '-f', 'qcow2', '-t', 'writeback', '-p', '-b', step.baseName, step.top], {
          onStdoutLine: (line) => {
            const fraction = parseProgress(line);
            if (fraction !== undefined) context.progress.update(fraction);
          },
        });
      } catch (error) {
        // qemu-img takes the base's write lock when it opens it, before writing anything.
        if (isLockFailure(error)) throw inUseByOther(step.base);
        throw error;
      }
      // A commit killed in an earlier run may have left clusters allocated in the base that nothing uses.
      await repairLeaks(step.base);
      fsyncPath(step.base);
      context.progress.done();
      return;
    case 'shrink-base':
      await qemuImg(['resize', '-f', 'qcow2', '--shrink', step.base, String(step.sizeBytes)], { timeoutMs: 60 * 60_000, untorn: true });
      fsyncPath(step.base);
      return;
    case 'replace-top':
      copyOwnership(step.top, step.base);
      commitRename(step.base, step.top);
      if (dirname(step.base) !== dirname(step.top)) fsyncDirectoryOf(step.base);
      return;
    case 'note-intermediates':
      writeLeftoversNote(step.note, step.paths);
      return;
    case 'remove':
      removeIfExists(step.path);
      fsyncDirectoryOf(step.path);
      return;
    case 'forget-notes':
      for (const note of step.notes) removeIfExists(note);
      fsyncDirectoryOf(step.notes[0]!);
      return;
  }
}

export async function mergeExternal(opened: OpenedImage, request: MergeRequest, context: Context): Promise<ChangeReport> {
  const locks: HeldLock[] = [];
  const unregister = onExit(() => locks.forEach((lock) => lock.release()));
  try {
    if (opened.ref.format !== 'qcow2') throw new Error('internal: merge --external on a ploop image');
    const layers = await readChain(opened.ref.path);
    // Every lower file: our exclusive lock, then QEMU's (a VM using it as its own image or backing file).
    for (const layer of layers.slice(1)) {
      locks.push(acquireLock(layer.path, 'exclusive', layer.path));
      await readLayer(layer.path, false);
      if (!layer.dirty) await requireNoWriterConflict(layer.path);
    }
    const leftovers = findLeftovers(opened.ref.path);
    // Files an interrupted run meant to remove are locked like the layers: nobody else may be using them.
    if (layers.length === 1) {
      for (const path of leftovers.paths) {
        locks.push(acquireLock(path, 'exclusive', path));
        await readLayer(path, false);
      }
    }
    const warnings: string[] = leftovers.unreadable.map((note) => `The note ${note} could not be read; it is removed, and the files it may name are left alone.`);
    for (const layer of layers) warnings.push(...(await requireConsistentQcow2(layer.path)).warnings);
    const chain = layers.map((layer) => ({ ...layer, hostBytes: hostAllocatedBytes(layer.path) }));
    const base = chain[chain.length - 1]!;
    const plan = planExternalMerge({
      chain,
      freeBytesAtBase: freeBytesAt(dirname(base.path)),
      baseOnTopFilesystem: chain.length === 1 || sameFilesystem(dirname(base.path), dirname(opened.ref.path)),
      leftovers,
      note: newLeftoversNote(opened.ref.path),
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
    await executePlan(plan, describeExternalStep, (step) => runStep(step, context));
    const hostBytesAfter = hostAllocatedBytes(opened.ref.path);
    const removed = plan.steps.filter((s) => s.kind === 'remove').length;
    return {
      kind: 'change', operation: 'merge', dryRun: false, unchanged: false, plan: lines,
      messages:
        chain.length === 1
          ? [`Removed ${removed} intermediate image(s) that an interrupted merge --external left; ${opened.ref.path} was already standalone.`]
          : [
              `Merged the backing chain of ${chain.length} images into ${opened.ref.path}, which no longer has a backing file; ${removed} intermediate file(s) removed.`,
              `The base file ${base.path} now lives at ${opened.ref.path}; any other image that used it as a backing file must be re-pointed.`,
            ],
      facts: { ...facts, hostBytesAfter, freedBytes: Math.max(0, hostBytesBefore - hostBytesAfter) },
      warnings,
    };
  } finally {
    unregister();
    locks.forEach((lock) => lock.release());
  }
}
