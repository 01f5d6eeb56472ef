// Which guest bytes of a ploop image may hold data: every cluster that the BAT of any delta of the chain allocates.
import type { PloopImage } from './image.js';

/**
 * Half-open guest byte ranges [start, start + length), one per allocated cluster (adjacent ones joined), clipped
 * to the virtual size. An allocated cluster counts even when it holds zeros (a preallocated image allocates all):
 * the BAT is what this format says about data, and reading every cluster to look for zeros is not done here.
 */
export function allocatedRanges(image: PloopImage): { start: number; length: number }[] {
  const cluster = image.clusterBytes;
  const clusters = Math.ceil(image.sizeBytes / cluster);
  const out: { start: number; length: number }[] = [];
  for (let index = 0; index < clusters; index++) {
    const held = image.deltas.some((delta) => index < delta.header.batEntries && delta.bat[index] !== 0);
    if (!held) continue;
    const start = index * cluster;
    const length = Math.min(cluster, image.sizeBytes - start);
    const previous = out[out.length - 1];
    if (previous && previous.start + previous.length === start) previous.length += length;
    else out.push({ start, length });
  }
  return out;
}
