// The small surface the commands use to find a ploop image's files without opening the deltas.
import { readDescriptor } from './descriptor.js';

/** Absolute path of the delta that is written to (the top of the chain). */
export function topDeltaPath(ref: { folder: string }): string {
  return readDescriptor(ref.folder).chain[0]!.file;
}
