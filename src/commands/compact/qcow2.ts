// compact and its estimate for qcow2: discard through the appliance, QEMU punches the freed clusters out.
import { check as checkImage, freeLeaks, lockFreeQcow2, map, type MapExtent } from '../../formats/qcow2/qemu-img.js';
import type { Qcow2Image } from '../../formats/image.js';
import type { Context } from '../context.js';
import { truncateQcow2Tail } from './host.js';
import { requireConsistentQcow2 } from '../../formats/qcow2/consistency.js';
import { discoverFreeSpace, trimDisk, type BlockEstimate, type TrimSession } from './discover.js';
import { coveredClusters, intersect, normalize, subtract, totalBytes, touchedClusters, type Range } from '../../util/ranges.js';
import { snapshotSharedRanges } from '../../formats/qcow2/sharing.js';
import { formatBytes } from '../../util/units.js';
import { hostAllocatedBytes } from '../../util/space.js';

const DEFAULT_CLUSTER_BYTES = 65536;

export function clusterBytesOf(image: Qcow2Image): number {
  return image.chain[0]!.clusterSize ?? DEFAULT_CLUSTER_BYTES;
}

/**
 * The host bytes that discarding `free` releases: the parts of the top layer's clusters that are free in the
 * guest and whose host clusters really hold space in the file (a preallocated-metadata cluster is a hole).
 */
export function reclaimableBytes(topExtents: readonly MapExtent[], hostData: readonly Range[], free: readonly Range[]): number {
  let sum = 0;
  for (const extent of topExtents) {
    if (extent.depth !== 0 || extent.offset === undefined) continue;
    const offset = extent.offset;
    const hostRanges = intersect([{ start: extent.start, length: extent.length }], free).map((r) => ({ start: offset + r.start - extent.start, length: r.length }));
    sum += totalBytes(intersect(hostRanges, hostData));
  }
  return sum;
}

/** Free guest space whose data a lower layer (backing file) holds: compacting the top cannot release it. */
export function heldByLowerLayers(extents: readonly MapExtent[], free: readonly Range[]): number {
  const lower = extents.filter((e) => e.depth > 0 && (e.data || e.offset !== undefined)).map((e) => ({ start: e.start, length: e.length }));
  return totalBytes(intersect(lower, free));
}

export async function estimateQcow2(image: Qcow2Image, context: Context): Promise<BlockEstimate> {
  const clusterBytes = clusterBytesOf(image);
  const warnings: string[] = [];
  const check = await checkImage(image.path, 'qcow2', true);
  if (check.corruptions > 0 || check.checkErrors > 0) {
    warnings.push(`qemu-img check finds ${check.corruptions} corruption(s) and ${check.checkErrors} check error(s) in "${image.path}"; compact will refuse it until it is repaired.`);
  }
  const extents = await map(image.path, 'qcow2');
  const hostData = normalize((await map(image.path, 'raw')).filter((e) => e.data).map((e) => ({ start: e.start, length: e.length })));
  // The overlay reads the image without QEMU's lock, as -U does: beside a running VM (compact --info only; compact
  // itself has refused a held image) the estimate is made from what the file holds, with open.ts's staleness notice.
  const session = await discoverFreeSpace(lockFreeQcow2(image.path), 'qcow2', clusterBytes, context, image.path);
  const free = session.freeRanges;
  const allocated = extents.filter((e) => e.depth === 0 && e.offset !== undefined).map((e) => ({ start: e.start, length: e.length }));
  const allocatedBlocks = touchedClusters(allocated, clusterBytes);
  const freeAllocated = coveredClusters(intersect(allocated, free), clusterBytes).length;
  const held = heldByLowerLayers(extents, free);
  const shared = image.snapshots.length > 0 ? snapshotSharedRanges(image.path) : [];
  const heldBySnapshots = totalBytes(intersect(intersect(allocated, free), shared ?? []));
  if (shared === undefined) {
    warnings.push(
      `The image has ${image.snapshots.length} internal snapshot(s); clusters they share with the current state stay allocated (how much cannot be read from this image's layout). Delete them with "prl_disk_tool merge" to free that space.`,
    );
  } else if (image.snapshots.length > 0) {
    warnings.push(
      `The image has ${image.snapshots.length} internal snapshot(s); they hold ${formatBytes(heldBySnapshots)} of the free guest space, which compact cannot release. Delete them with "prl_disk_tool merge" to free it.`,
    );
  }
  if (image.chain.length > 1) {
    warnings.push(`Only the top layer "${image.path}" is compacted; ${formatBytes(held)} of free guest space is held by its backing files.`);
  }
  // Discarding a shared cluster only drops the current state's reference: it frees nothing on the host.
  const releasable = normalize(free).flatMap((range) => subtract(range, shared ?? []));
  return {
    clusterBytes,
    totalBlocks: Math.ceil(image.virtualSizeBytes / clusterBytes),
    allocatedBlocks,
    usedBlocks: allocatedBlocks - freeAllocated,
    reclaimableBytes: reclaimableBytes(extents, hostData, releasable),
    heldByLowerLayersBytes: held + heldBySnapshots,
    session: { layout: session.layout, steps: session.steps, skipped: session.skipped },
    warnings,
  };
}

export interface Qcow2CompactResult {
  session: TrimSession;
  hostBytesBefore: number;
  hostBytesAfter: number;
  truncatedBytes: number;
}

/** Trims in place: the drive with discard enabled, so QEMU releases the clusters as the guest trims. */
export async function compactQcow2(image: Qcow2Image, context: Context): Promise<Qcow2CompactResult> {
  const { leaks } = await requireConsistentQcow2(image.path);
  const hostBytesBefore = hostAllocatedBytes(image.path);
  // Leaked clusters (an interrupted write's) are host space no guest uses: freeing them is part of compacting.
  if (leaks > 0) await freeLeaks(image.path);
  const session = await trimDisk({ path: image.path, format: 'qcow2', readonly: false }, clusterBytesOf(image), context);
  const truncatedBytes = await truncateQcow2Tail(image.path);
  return { session, hostBytesBefore, hostBytesAfter: hostAllocatedBytes(image.path), truncatedBytes };
}
