// Which guest bytes of a qcow2 image may hold data (its whole backing chain, as qemu-img map sees it), and
// whether qemu-img preallocated the image; both from one `qemu-img map --output=json` run.
import { map, type MapExtent } from './qemu-img.js';

export interface Qcow2Allocation {
  /** Half-open guest byte ranges [start, start + length) that some layer holds as data not known to read zero. */
  data: { start: number; length: number }[];
  /** Laid out as qemu-img's preallocation=falloc|full lays an image out (see isPreallocatedLayout). */
  preallocated: boolean;
}

/**
 * qemu-img map reports, per extent, `data` (a layer allocates it) and `zero` (it reads as zeros: a zero cluster,
 * a preallocated cluster over a host hole, or nothing allocated anywhere). An extent that is data and not zero is
 * what a shrink may not cut; `depth` > 0 extents come from backing files, which the guest sees as well.
 */
export function dataExtents(extents: readonly MapExtent[]): { start: number; length: number }[] {
  return extents.filter((e) => e.data && !e.zero && e.length > 0).map((e) => ({ start: e.start, length: e.length }));
}

/**
 * preallocation=falloc and =full allocate every cluster as data in guest order, so the host offsets grow with the
 * guest offsets (qemu-img resize --preallocation=falloc appends the new clusters in the same order). A sparse
 * image that its guest filled has every cluster too, but in the order the guest wrote them. preallocation=metadata
 * shows as data over host holes (zero: true), which keeps the host sparse: not plain. Measured with qemu-img 7.2:
 * falloc and full give one extent `data: true, zero: false`, one offset run; so does a sparse image written
 * front to back in one go, which is as fully allocated as a preallocated one and is treated the same.
 */
export function isPreallocatedLayout(extents: readonly MapExtent[], virtualSizeBytes: number): boolean {
  let covered = 0;
  let lastOffset = -1;
  for (const e of extents) {
    if (e.depth !== 0 || !e.data || e.zero || e.offset === undefined || e.start !== covered) return false;
    if (e.offset <= lastOffset) return false;
    lastOffset = e.offset;
    covered += e.length;
  }
  return virtualSizeBytes > 0 && covered >= virtualSizeBytes;
}

export async function readAllocation(path: string, virtualSizeBytes: number): Promise<Qcow2Allocation> {
  const extents = await map(path, 'qcow2');
  return { data: dataExtents(extents), preallocated: isPreallocatedLayout(extents, virtualSizeBytes) };
}
