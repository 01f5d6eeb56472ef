// merge on ploop: every snapshot delta folded down into the base in place, the descriptor then names the base as the
// only image (under the top's GUID, as ploop's own merge does), and the merged delta files are removed.
// Why what the chain shows never changes, and the crash states: docs/merge-convert.md.
import type { Context } from '../context.js';
import type { ChangeReport } from '../report.js';
import type { MergeRequest } from '../request.js';
import type { OpenedImage } from '../open.js';
import { writeDescriptor } from '../../formats/ploop/descriptor.js';
import { refuseBranches, setSingleImage } from './ploop-descriptor.js';
import { findPloopLeftovers, removeMergedDeltas, removePloopLeftovers } from './ploop-leftovers.js';
import { newLeftoversNote, writeLeftoversNote } from './leftovers.js';
import { formatBytes } from '../../util/units.js';
import { recoverPloopImage, type PloopImage } from '../../formats/ploop/image.js';
import { hostBytesOf } from '../../formats/ploop/delta.js';
import { foldIntoBase, releaseZeroed, surveyPloopMerge, type PloopMergeFacts } from '../../formats/ploop/fold.js';
import { requireFreeSpace } from '../../util/space.js';

function describeMerge(image: PloopImage, facts: PloopMergeFacts): string[] {
  const base = image.deltas[image.deltas.length - 1]!;
  const overlays = image.deltas.slice(0, -1);
  return [
    `Fold the ${overlays.length} snapshot delta(s) of ${image.descriptor.folder} into the base delta ${base.path}, in place.`,
    `  1. Copy ${facts.overlayClusters} cluster(s) (${formatBytes(facts.overlayClusters * facts.clusterBytes)}) as the top sees them into the base, ${facts.appendedClusters} of them appended to it; each batch is written, fsynced, then entered in the base's BAT and fsynced.`,
    `  2. Rewrite DiskDescriptor.xml (atomically) so that the base is the only image, under the top's GUID.`,
    ...overlays.map((delta, i) => `  ${i + 3}. Remove the merged delta ${delta.path}.`),
    ...(image.descriptor.preallocated ? [] : [`  ${overlays.length + 3}. Release the base's clusters that the fold left all-zero (the copy never allocates an all-zero cluster).`]),
  ];
}

export async function mergePloop(opened: OpenedImage, request: MergeRequest, context: Context): Promise<ChangeReport> {
  if (opened.image.format !== 'ploop') throw new Error('internal: mergePloop on a qcow2 image');
  const folder = opened.image.folder;
  // The session opened every delta once, each a file of its own, no two the same: the base and the top writable.
  const image = opened.image.handle;
  const sizeBytes = image.sizeBytes;
  const hostBytesBefore = image.deltas.reduce((sum, delta) => sum + hostBytesOf(delta), 0);
  const common = { path: folder, deltas: image.deltas.map((delta) => delta.path), sizeBeforeBytes: sizeBytes, sizeAfterBytes: sizeBytes, hostBytesBefore };
  const leftovers = findPloopLeftovers(image, context.notice);
  if (image.deltas.length === 1 && leftovers.paths.length + leftovers.notes.length > 0) {
    const message =
      leftovers.paths.length > 0
        ? `${folder} has no snapshot deltas; remove the ${leftovers.paths.length} merged delta(s) an interrupted merge left (${leftovers.paths.join(', ')}) and its note.`
        : `${folder} has no snapshot deltas; remove the note(s) an interrupted merge left (${leftovers.notes.join(', ')}).`;
    if (!request.dryRun) removePloopLeftovers(leftovers, image.deltas[0]!.path);
    return { kind: 'change', operation: 'merge', dryRun: request.dryRun, unchanged: false, plan: [message], messages: [message], facts: { ...common, hostBytesAfter: hostBytesBefore }, warnings: [] };
  }
  if (image.deltas.length === 1) {
    const message = `${folder} has no snapshot deltas; nothing to merge.`;
    return { kind: 'change', operation: 'merge', dryRun: request.dryRun, unchanged: true, plan: [message], messages: [message], facts: { ...common, hostBytesAfter: hostBytesBefore }, warnings: [] };
  }
  const facts = surveyPloopMerge(image);
  refuseBranches(image.descriptor);
  const plan = [...image.pendingRecovery.map((finding) => `Complete an interrupted operation first: ${finding}.`), ...describeMerge(image, facts)];
  const base = image.deltas[image.deltas.length - 1]!;
  requireFreeSpace(base.path, facts.appendedClusters * facts.clusterBytes, 'folding the snapshot deltas into the base');
  if (request.dryRun) {
    return { kind: 'change', operation: 'merge', dryRun: true, unchanged: false, plan, messages: [], facts: { ...common, hostBytesAfter: hostBytesBefore }, warnings: [] };
  }
  if (image.pendingRecovery.length > 0) recoverPloopImage(image);
  const merged = image.deltas.slice(0, -1);
  const overlays = merged.map((delta) => delta.path);
  context.progress.step('Folding the snapshot deltas into the base');
  const zeroed = await foldIntoBase(image, facts, (fraction) => context.progress.update(fraction));
  context.progress.done();
  // Noted first: a power cut after the commit may bring an unlinked delta back, and the note lets the next run
  // prove it is a leftover of ours (ploop-leftovers.ts).
  const note = newLeftoversNote(base.path);
  writeLeftoversNote(note, base.path, base.path, overlays);
  setSingleImage(image.descriptor);
  writeDescriptor(image.descriptor);
  const kept = removeMergedDeltas(merged);
  removePloopLeftovers({ paths: leftovers.paths, notes: [...leftovers.notes, note] }, base.path);
  releaseZeroed(image, zeroed);
  const hostBytesAfter = hostBytesOf(base);
  return {
    kind: 'change', operation: 'merge', dryRun: false, unchanged: false, plan,
    messages: [`Merged ${overlays.length} snapshot delta(s) of ${folder} into ${base.path}, now its only image; ${formatBytes(Math.max(0, hostBytesBefore - hostBytesAfter))} of host space was freed.`],
    facts: { ...common, hostBytesAfter, freedBytes: Math.max(0, hostBytesBefore - hostBytesAfter) },
    warnings: kept.map((path) => `Left "${path}" in place: that name no longer holds the merged delta (something replaced it during the merge), so it was not removed.`),
  };
}
