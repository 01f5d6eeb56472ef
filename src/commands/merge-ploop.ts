// merge on ploop: every snapshot delta folded down into the base in place, the descriptor then names the base as the
// only image (under the top's GUID, as ploop's own merge does), and the merged delta files are removed.
// Why what the chain shows never changes, and the crash states: docs/merge-convert.md.
import type { Context } from './context.js';
import type { ChangeReport } from './report.js';
import type { MergeRequest } from './request.js';
import type { OpenedImage } from './open.js';
import { closePloopImage, layoutOf, openPloopImage, recoverPloopImage, type PloopImage } from '../formats/ploop/image.js';
import { executeCompact, planCompact } from '../formats/ploop/compact.js';
import { clearInUse, clusterHostOffset, closeDelta, openDelta, syncData, usedEndBytes, writeData, type Delta } from '../formats/ploop/delta.js';
import { readFully, writeFully } from '../util/file-io.js';
import { encodeEntry, offsetToEntry, slotOffset } from '../formats/ploop/bat.js';
import { extensionActive } from '../formats/ploop/check.js';
import { effectiveSizeSectors, formatVersion } from '../formats/ploop/header.js';
import { writeDescriptor } from '../formats/ploop/descriptor.js';
import { refuseBranches, setSingleImage } from './merge-ploop-descriptor.js';
import { fsyncDirectoryOf, removeIfExists } from '../util/atomic.js';
import { throwIfCancelled } from '../util/cancel.js';
import { NotSupported } from '../util/errors.js';
import { alignUp, formatBytes } from '../util/units.js';
import { hostAllocatedBytes, requireFreeSpace } from '../util/space.js';

/** Clusters fsynced together: data first, then their BAT entries, then a second fsync. */
const BATCH_CLUSTERS = 64;

export interface PloopMergeFacts {
  /** Virtual clusters some snapshot delta holds (they are copied down). */
  overlayClusters: number;
  /** Of those, the ones the base does not hold yet (appended to the base). */
  appendedClusters: number;
  clusterBytes: number;
}

/** Which clusters move; refuses chains the in-place fold cannot handle. Reads only headers and BATs. */
export function surveyPloopMerge(image: PloopImage): PloopMergeFacts {
  const base = image.deltas[image.deltas.length - 1]!;
  const top = image.deltas[0]!;
  const folder = image.descriptor.folder;
  for (const delta of image.deltas) {
    if (effectiveSizeSectors(delta.header) !== effectiveSizeSectors(top.header) || delta.header.batEntries < top.header.batEntries) {
      throw new NotSupported(`The delta "${delta.path}" of "${folder}" has another virtual size than the top delta (the image was resized after a snapshot); merge does not fold such chains. Nothing was changed.`);
    }
  }
  if (extensionActive(base.header)) {
    throw new NotSupported(`The base delta "${base.path}" carries a format extension (a dirty bitmap), which folding data into it would make stale; merge does not handle it. Nothing was changed.`);
  }
  let overlayClusters = 0;
  let appendedClusters = 0;
  for (let i = 0; i < top.header.batEntries; i++) {
    if (!image.deltas.slice(0, -1).some((delta) => clusterHostOffset(delta, i) !== undefined)) continue;
    overlayClusters++;
    if (clusterHostOffset(base, i) === undefined) appendedClusters++;
  }
  return { overlayClusters, appendedClusters, clusterBytes: image.clusterBytes };
}

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

/**
 * Copies every cluster an overlay holds, as the top sees it, into the base (see the header comment). An all-zero
 * cluster the base does not hold is not copied (the base reads it as zeros; issue 19), unless the image is
 * preallocated. Returns the base clusters overwritten with zeros, for release once the base is the only image.
 */
async function foldDown(image: PloopImage, base: Delta, context: Context, total: number): Promise<number[]> {
  const sparse = !image.descriptor.preallocated;
  const zeroed: number[] = [];
  const overlays = image.deltas.slice(0, -1);
  const cluster = image.clusterBytes;
  // v2 BAT entries count clusters from the start of the file; v1 entries count sectors.
  let next = formatVersion(base.header) === 1 ? alignUp(usedEndBytes(base), 512) : alignUp(usedEndBytes(base), cluster);
  let pending: [number, number][] = [];
  let done = 0;
  const zeros = Buffer.alloc(cluster);
  const flush = (): void => {
    syncData(base, 'merged clusters written');
    if (pending.length === 0) return;
    for (const [index, entry] of pending) {
      writeFully(base.fd, encodeEntry(entry), slotOffset(index));
      base.bat[index] = entry;
    }
    syncData(base, `${pending.length} BAT entries of merged clusters written`);
    pending = [];
  };
  for (let i = 0; i < image.deltas[0]!.header.batEntries; i++) {
    const source = overlays.find((delta) => clusterHostOffset(delta, i) !== undefined);
    if (!source) continue;
    throwIfCancelled();
    const data = readFully(source.fd, cluster, clusterHostOffset(source, i)!);
    const inBase = clusterHostOffset(base, i);
    const zero = sparse && data.equals(zeros);
    // Overwriting the base's own copy is invisible: an overlay shadows this cluster until the descriptor switch.
    if (inBase !== undefined) {
      writeData(base, data, inBase);
      if (zero) zeroed.push(i);
    } else if (!zero) {
      writeData(base, data, next);
      pending.push([i, offsetToEntry(base.header, next)]);
      next += cluster;
    }
    if (++done % BATCH_CLUSTERS === 0) {
      flush();
      // Let SIGINT/SIGTERM handlers run; throwIfCancelled above then stops between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
    context.progress.update(done / total);
  }
  flush();
  return zeroed;
}

/** Drops the clusters the fold left all-zero from the (now only) base delta; a crash before it only costs space. */
function releaseZeroed(folder: string, zeroed: readonly number[]): void {
  if (zeroed.length === 0) return;
  const image = openPloopImage(folder, { write: true });
  try {
    executeCompact(image, planCompact(layoutOf(image, 0), [], zeroed));
  } finally {
    closePloopImage(image);
  }
}

export async function mergePloop(opened: OpenedImage, request: MergeRequest, context: Context): Promise<ChangeReport> {
  if (opened.ref.format !== 'ploop') throw new Error('internal: mergePloop on a qcow2 image');
  const folder = opened.ref.folder;
  let image = openPloopImage(folder, { write: !request.dryRun });
  let closed = false;
  const close = (): void => {
    if (!closed) closePloopImage(image);
    closed = true;
  };
  try {
    const sizeBytes = image.sizeBytes;
    const hostBytesBefore = image.deltas.reduce((sum, delta) => sum + hostAllocatedBytes(delta.path), 0);
    const common = { path: folder, deltas: image.deltas.map((delta) => delta.path), sizeBeforeBytes: sizeBytes, sizeAfterBytes: sizeBytes, hostBytesBefore };
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
    if (image.pendingRecovery.length > 0) {
      recoverPloopImage(image);
      close();
      image = openPloopImage(folder, { write: true });
      closed = false;
    }
    const overlays = image.deltas.slice(0, -1).map((delta) => delta.path);
    const writableBase = openDelta(base.path, { write: true });
    let zeroed: number[];
    try {
      context.progress.step('Folding the snapshot deltas into the base');
      zeroed = await foldDown(image, writableBase, context, Math.max(1, facts.overlayClusters));
      // The base now holds data: its header closes as ploop's check wants it (in-use 0, CIF_Empty up to date).
      clearInUse(writableBase);
      context.progress.done();
    } finally {
      closeDelta(writableBase);
    }
    setSingleImage(image.descriptor);
    writeDescriptor(image.descriptor);
    close();
    for (const path of overlays) removeIfExists(path);
    fsyncDirectoryOf(overlays[0]!);
    releaseZeroed(folder, zeroed);
    const hostBytesAfter = hostAllocatedBytes(base.path);
    return {
      kind: 'change', operation: 'merge', dryRun: false, unchanged: false, plan,
      messages: [`Merged ${overlays.length} snapshot delta(s) of ${folder} into ${base.path}, now its only image; ${formatBytes(Math.max(0, hostBytesBefore - hostBytesAfter))} of host space was freed.`],
      facts: { ...common, hostBytesAfter, freedBytes: Math.max(0, hostBytesBefore - hostBytesAfter) },
      warnings: [],
    };
  } finally {
    close();
  }
}
