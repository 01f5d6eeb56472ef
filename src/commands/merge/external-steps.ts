// The steps of merge --external: their one-sentence descriptions and how each runs.
import { dirname } from 'node:path';
import type { Context } from '../context.js';
import { inUseByOther } from '../../formats/qcow2/layers.js';
import { copyOwnership } from '../../util/host-files.js';
import { isLockFailure, repairLeaks } from '../../formats/qcow2/qemu-img.js';
import { commitChainInto, pullUpChain, resizeQcow2 } from '../../formats/qcow2/changes.js';
import { commitRename, fsyncDirectoryOf, fsyncPath, removeIfExists } from '../../util/atomic.js';
import { writeLeftoversNote } from './leftovers.js';
import { formatBytes } from '../../util/units.js';

export type ExternalStep =
  | { kind: 'commit'; top: string; base: string; baseName: string; overlays: number; dataBytes: number }
  | { kind: 'pull-up'; top: string; layers: number; dataBytes: number; shared: string[] }
  | { kind: 'shrink-base'; base: string; sizeBytes: number }
  | { kind: 'note-intermediates'; note: string; top: string; resultFile: string; paths: string[] }
  | { kind: 'replace-top'; base: string; top: string }
  | { kind: 'remove'; path: string }
  | { kind: 'forget-notes'; notes: string[] };

export function describeExternalStep(step: ExternalStep): string {
  switch (step.kind) {
    case 'commit':
      return `Copy the data of ${step.overlays} overlay(s) (at most ${formatBytes(step.dataBytes)}) from ${step.top} down into the base ${step.base} (qemu-img commit), then free any cluster the base leaked; what ${step.top} shows does not change.`;
    case 'pull-up':
      return `Copy into ${step.top} the data it reads from its ${step.layers} lower layer(s) (at most ${formatBytes(step.dataBytes)}, qemu-img rebase -b ""), then drop its backing file; ${step.shared.join(', ')} may be used by other images, so they are only read; what ${step.top} shows does not change.`;
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

export async function runExternalStep(step: ExternalStep, context: Context): Promise<void> {
  switch (step.kind) {
    case 'commit':
      context.progress.step('Committing the overlays into the base');
      // -b implies -d: the top stays valid (and keeps showing the same content) while the base fills up.
      try {
        await commitChainInto(step.top, step.baseName, (fraction) => context.progress.update(fraction));
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
    case 'pull-up':
      context.progress.step('Copying the data of the lower layers into the image');
      await pullUpChain(step.top, (fraction) => context.progress.update(fraction));
      fsyncPath(step.top);
      context.progress.done();
      return;
    case 'shrink-base':
      await resizeQcow2(step.base, step.sizeBytes, { shrink: true, preallocate: false });
      fsyncPath(step.base);
      return;
    case 'replace-top':
      copyOwnership(step.top, step.base);
      commitRename(step.base, step.top);
      if (dirname(step.base) !== dirname(step.top)) fsyncDirectoryOf(step.base);
      return;
    case 'note-intermediates':
      writeLeftoversNote(step.note, step.top, step.resultFile, step.paths);
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

