// The ploop engine's merge: which clusters a fold moves, and the fold itself, every snapshot delta copied down
// into the base in place (data written and fsynced before its BAT entry, in batches). What the chain shows never
// changes during the fold: an overlay shadows every cluster until the descriptor names the base alone
// (docs/merge-convert.md).
import { layoutOf, type PloopImage } from './image.js';
import { executeCompact, planCompact } from './compact.js';
import { clearInUse, clusterHostOffset, syncData, usedEndBytes, writeData, type Delta } from './delta.js';
import { readFully, writeFully } from '../../util/file-io.js';
import { encodeEntry, offsetToEntry, slotOffset } from './bat.js';
import { extensionActive } from './check.js';
import { effectiveSizeSectors, formatVersion } from './header.js';
import { throwIfCancelled } from '../../util/cancel.js';
import { NotSupported } from '../../util/errors.js';
import { alignUp } from '../../util/units.js';

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

/**
 * Copies every cluster an overlay holds, as the top sees it, into the base (see the header comment). An all-zero
 * cluster the base does not hold is not copied (the base reads it as zeros; issue 19), unless the image is
 * preallocated. Returns the base clusters overwritten with zeros, for release once the base is the only image.
 */
async function copyDown(image: PloopImage, base: Delta, onFraction: (fraction: number) => void, total: number): Promise<number[]> {
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
    onFraction(done / total);
  }
  flush();
  return zeroed;
}

/**
 * Drops the clusters the fold left all-zero from the base delta, once the descriptor names it alone (the image is
 * then the base: the same handle, without the merged deltas); a crash before it only costs space.
 */
export function releaseZeroed(image: PloopImage, zeroed: readonly number[]): void {
  if (zeroed.length === 0) return;
  const alone: PloopImage = { ...image, deltas: [image.deltas[image.deltas.length - 1]!] };
  executeCompact(alone, planCompact(layoutOf(alone, 0), [], zeroed));
}

/**
 * Folds every snapshot delta into the base, in place, as the one writer of the base (the session opened it for
 * writing, a file of its own, no other layer of the chain): the copy (see copyDown), then the base left as
 * ploop's check wants it (in-use 0, CIF_Empty up to date). Returns the base clusters left all-zero, for
 * releaseZeroed() once the descriptor names the base alone.
 */
export async function foldIntoBase(image: PloopImage, facts: PloopMergeFacts, onFraction: (fraction: number) => void): Promise<number[]> {
  const base = image.deltas[image.deltas.length - 1]!;
  const zeroed = await copyDown(image, base, onFraction, Math.max(1, facts.overlayClusters));
  clearInUse(base);
  return zeroed;
}
