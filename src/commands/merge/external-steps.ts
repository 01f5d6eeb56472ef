// The steps of merge --external: their one-sentence descriptions and how each runs.
import { dirname } from 'node:path';
import type { Context } from '../context.js';
import { inUseByOther } from '../../formats/qcow2/layers.js';
import { carryOver } from '../../util/host-files.js';
import { freeLeaks, isLockFailure } from '../../formats/qcow2/qemu-img.js';
import { requireConsistentQcow2 } from '../../formats/qcow2/consistency.js';
import { commitChainInto, freeingLeaksIfInterrupted, pullUpChain, resizeQcow2 } from '../../formats/qcow2/changes.js';
import { commitRename, fsyncDirectoryOf, fsyncPath, removeIfExists } from '../../util/atomic.js';
import { stillNames } from '../../util/safe-file.js';
import { Refused } from '../../util/errors.js';
import { writeLeftoversNote } from './leftovers.js';
import { formatBytes } from '../../util/units.js';
import { clearUnderZeroClusters, writeZerosAsData, zeroAllZeroClusters } from '../../formats/qcow2/zero-clusters.js';

export type ExternalStep =
  | { kind: 'zero-overlays'; overlays: { path: string; clusterBytes: number }[]; dataBytes: number }
  | { kind: 'commit'; top: string; base: string; baseName: string; overlays: number; dataBytes: number }
  | { kind: 'clear-under-zeros'; top: string; base: string; overlays: number }
  | { kind: 'reallocate-base'; base: string }
  | { kind: 'pull-up'; top: string; layers: number; dataBytes: number; shared: string[] }
  | { kind: 'shrink-base'; base: string; sizeBytes: number }
  | { kind: 'note-intermediates'; note: string; top: string; resultFile: string; paths: string[] }
  | { kind: 'replace-top'; base: string; top: string }
  | { kind: 'remove'; path: string }
  | { kind: 'forget-notes'; notes: string[] };

export function describeExternalStep(step: ExternalStep): string {
  switch (step.kind) {
    case 'zero-overlays':
      return `Read the data clusters of ${step.overlays.map((o) => o.path).join(', ')} (at most ${formatBytes(step.dataBytes)}) and turn those that hold only zeros into zero clusters, so that the commit does not copy them into the base as data; what each shows does not change.`;
    case 'commit':
      return `Copy the data of ${step.overlays} overlay(s) (at most ${formatBytes(step.dataBytes)}) from ${step.top} down into the base ${step.base} (qemu-img commit), then check the base (stopping if it is damaged) and free any cluster it leaked; what ${step.top} shows does not change.`;
    case 'pull-up':
      return `Copy into ${step.top} the data it reads from its ${step.layers} lower layer(s) (at most ${formatBytes(step.dataBytes)}, qemu-img rebase -b ""), then drop its backing file; ${step.shared.join(', ')} may be used by other images, so they are only read; what ${step.top} shows does not change.`;
    case 'clear-under-zeros':
      return `Free the clusters of the base ${step.base} under the zero clusters of the overlays (the overlays hide them), so that the commit's zero writes free nothing while it allocates; what ${step.top} shows does not change.`;
    case 'reallocate-base':
      return `Write zeros as data where the commit left zero clusters in the plain base ${step.base}, so that it stays fully allocated.`;
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

/**
 * Right before a rename or unlink: each name must still hold the file the session validated (`identities`, by real
 * path), so that a layer swapped for a link to another VM's disk meanwhile is never renamed over the top or removed.
 */
function requireValidated(identities: ReadonlyMap<string, string>, ...paths: string[]): void {
  for (const path of paths) {
    const identity = identities.get(path);
    if (identity === undefined || !stillNames(path, identity)) {
      throw new Refused(`"${path}" is no longer the file that was validated (it was replaced meanwhile), so it was neither renamed nor removed; the image still shows the same content. Find out who changes the image's folder, then run the command again.`);
    }
  }
}

export async function runExternalStep(step: ExternalStep, context: Context, identities: ReadonlyMap<string, string>): Promise<void> {
  switch (step.kind) {
    case 'zero-overlays':
      context.progress.step('Finding the zero-filled clusters of the overlays');
      for (const overlay of step.overlays) await zeroAllZeroClusters(overlay.path, overlay.clusterBytes);
      context.progress.done();
      return;
    case 'commit':
      context.progress.step('Committing the overlays into the base');
      // -b implies -d: the top stays valid (and keeps showing the same content) while the base fills up.
      try {
        await freeingLeaksIfInterrupted(step.base, () => commitChainInto(step.top, step.baseName, (fraction) => context.progress.update(fraction)));
      } catch (error) {
        // qemu-img takes the base's write lock when it opens it, before writing anything.
        if (isLockFailure(error)) throw inUseByOther(step.base);
        throw error;
      }
      // A commit killed in an earlier run may have left clusters allocated in the base that nothing uses; damage
      // stops the merge here, before the base takes the top's name (the top still shows the same content).
      if ((await requireConsistentQcow2(step.base)).leaks > 0) await freeLeaks(step.base);
      fsyncPath(step.base);
      context.progress.done();
      return;
    case 'pull-up':
      context.progress.step('Copying the data of the lower layers into the image');
      await freeingLeaksIfInterrupted(step.top, () => pullUpChain(step.top, (fraction) => context.progress.update(fraction)));
      fsyncPath(step.top);
      context.progress.done();
      return;
    case 'clear-under-zeros':
      await clearUnderZeroClusters(step.top, step.overlays, step.base);
      fsyncPath(step.base);
      return;
    case 'reallocate-base':
      await writeZerosAsData(step.base);
      fsyncPath(step.base);
      return;
    case 'shrink-base':
      await resizeQcow2(step.base, step.sizeBytes, { shrink: true, preallocate: false });
      fsyncPath(step.base);
      return;
    case 'replace-top':
      requireValidated(identities, step.base, step.top);
      await carryOver(step.top, step.base);
      commitRename(step.base, step.top);
      if (dirname(step.base) !== dirname(step.top)) fsyncDirectoryOf(step.base);
      return;
    case 'note-intermediates':
      writeLeftoversNote(step.note, step.top, step.resultFile, step.paths);
      return;
    case 'remove':
      // A layer of the chain must still be itself; a leftover a note named was proven ours by findLeftovers.
      if (identities.has(step.path)) requireValidated(identities, step.path);
      removeIfExists(step.path);
      fsyncDirectoryOf(step.path);
      return;
    case 'forget-notes':
      for (const note of step.notes) removeIfExists(note);
      fsyncDirectoryOf(step.notes[0]!);
      return;
  }
}

