// A ploop merge removes the merged deltas after the descriptor names only the base. A power cut before the
// folder's fsync can bring an unlinked delta back (B15): a file that nothing references. The merge therefore
// notes the deltas it will remove (leftovers.ts: a note proven ours, for this base, naming plain files of
// its folder) before the descriptor commit, and the next run removes what a note lists, but only a file that is
// still a ploop delta and that the descriptor no longer names anywhere: while the chain is in the descriptor,
// its deltas are the image, whatever a note says.
import { basename } from 'node:path';
import type { PloopImage } from '../../formats/ploop/image.js';
import type { Delta } from '../../formats/ploop/delta.js';
import { FileRefused, readRegularFileHead, stillNames } from '../../util/safe-file.js';
import { serializeDescriptor } from '../../formats/ploop/descriptor.js';
import { SIGNATURE_V1, SIGNATURE_V2 } from '../../formats/ploop/header.js';
import { fsyncDirectoryOf, removeIfExists } from '../../util/atomic.js';
import { findLeftovers } from './leftovers.js';

export interface PloopLeftovers {
  /** Our notes beside the base: removed once what they list is gone. */
  notes: string[];
  /** Merged deltas an interrupted merge left: listed by a note, named nowhere in the descriptor. */
  paths: string[];
}

/** Read without following a link or waiting on a FIFO (the name was checked, but it may be swapped since). */
function isPloopDelta(path: string): boolean {
  let text: string;
  try {
    text = readRegularFileHead(path, 16).head.toString('latin1');
  } catch (error) {
    if (error instanceof FileRefused) return false;
    throw error;
  }
  return text === SIGNATURE_V1 || text === SIGNATURE_V2;
}

/** What an interrupted merge left beside the image's base; call it holding the image's exclusive lock. */
export function findPloopLeftovers(image: PloopImage, notice: (message: string) => void): PloopLeftovers {
  const base = image.deltas[image.deltas.length - 1]!.path;
  const found = findLeftovers(base, false);
  for (const warning of found.warnings) notice(warning);
  const descriptor = serializeDescriptor(image.descriptor);
  const chain = new Set(image.deltas.map((delta) => delta.path));
  const paths = found.paths.filter((path) => !chain.has(path) && !descriptor.includes(basename(path)) && isPloopDelta(path));
  return { notes: found.notes, paths };
}

/**
 * Removes the deltas a merge folded, each only while its name still holds the delta that was folded (lstat right
 * before the unlink: a name swapped meanwhile, say for a link to another container's delta, is left alone).
 * Returns the names left in place. The folder's fsync comes with removePloopLeftovers().
 */
export function removeMergedDeltas(merged: readonly Pick<Delta, 'path' | 'identity'>[]): string[] {
  const kept: string[] = [];
  for (const delta of merged) {
    if (stillNames(delta.path, delta.identity)) removeIfExists(delta.path);
    else kept.push(delta.path);
  }
  return kept;
}

/** Removes the leftovers and then the notes, each step made durable by a fsync of the folder. */
export function removePloopLeftovers(leftovers: PloopLeftovers, base: string): void {
  for (const path of leftovers.paths) removeIfExists(path);
  fsyncDirectoryOf(base);
  for (const note of leftovers.notes) removeIfExists(note);
  fsyncDirectoryOf(base);
}
