// Which clusters of a qcow2 image's current state an internal snapshot shares, read from the file itself:
// qemu-img exposes neither refcounts nor the L2 "copied" flag. Facts from QEMU's docs/interop/qcow2.txt:
// big-endian header fields; L1 and L2 entries are u64 whose bits 9-55 hold a host offset; bit 63 (COPIED) is set
// exactly when the cluster's refcount is 1, which `qemu-img check` verifies for the active tables.
import { closeSync, fstatSync, openSync } from 'node:fs';
import { ImageInvalid } from '../../util/errors.js';
import { readFully } from '../../util/file-io.js';

const MAGIC = 0x514649fb; // "QFI\xfb"
const HEADER_BYTES = 104;
const OFFSET = { magic: 0, version: 4, clusterBits: 20, size: 24, l1Size: 36, l1TableOffset: 40, incompatibleFeatures: 72 } as const;
const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
/** Incompatible feature bit 4: 128-bit L2 entries with subcluster bitmaps. */
const EXTENDED_L2 = 1n << 4n;
const OFFSET_MASK = 0x00fffffffffffe00n;
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** A half-open range of guest bytes. */
export interface GuestRange {
  start: number;
  length: number;
}

interface Layout {
  clusterBytes: number;
  sizeBytes: number;
  l1Entries: number;
  l1Offset: number;
  fileBytes: number;
}

function readLayout(fd: number, path: string): Layout | undefined {
  const header = readFully(fd, HEADER_BYTES, 0);
  const fileBytes = fstatSync(fd).size;
  const bad = (what: string): never => {
    throw new ImageInvalid(`"${path}" is not a readable qcow2 image: ${what}`);
  };
  if (header.readUInt32BE(OFFSET.magic) !== MAGIC) bad('no qcow2 signature');
  const version = header.readUInt32BE(OFFSET.version);
  if (version !== 2 && version !== 3) bad(`version ${version}`);
  // An extended-L2 image keeps its flags elsewhere; the caller then says it cannot tell.
  if (version === 3 && (header.readBigUInt64BE(OFFSET.incompatibleFeatures) & EXTENDED_L2) !== 0n) return undefined;
  const clusterBits = header.readUInt32BE(OFFSET.clusterBits);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) bad(`cluster bits ${clusterBits}`);
  const clusterBytes = 2 ** clusterBits;
  const sizeBytes = Number(header.readBigUInt64BE(OFFSET.size));
  const l1Entries = header.readUInt32BE(OFFSET.l1Size);
  const l1Offset = Number(header.readBigUInt64BE(OFFSET.l1TableOffset));
  const l2Span = (clusterBytes / 8) * clusterBytes;
  if (l1Entries < Math.ceil(sizeBytes / l2Span)) bad(`an L1 table of ${l1Entries} entries for ${sizeBytes} bytes`);
  if (l1Offset % clusterBytes !== 0 || l1Offset + l1Entries * 8 > fileBytes) bad(`the L1 table at ${l1Offset} lies outside the file`);
  return { clusterBytes, sizeBytes, l1Entries, l1Offset, fileBytes };
}

/**
 * The guest ranges whose data cluster the current state shares with an internal snapshot (refcount above 1):
 * discarding them frees nothing on the host. Compressed clusters are left out (their host clusters are shared
 * by design). Undefined when the image's layout (extended L2 entries) is not one this reader knows.
 */
export function snapshotSharedRanges(path: string): GuestRange[] | undefined {
  const fd = openSync(path, 'r');
  try {
    const layout = readLayout(fd, path);
    if (layout === undefined) return undefined;
    const { clusterBytes, sizeBytes, l1Entries, l1Offset, fileBytes } = layout;
    const l2Entries = clusterBytes / 8;
    const l1 = readFully(fd, l1Entries * 8, l1Offset);
    const shared: GuestRange[] = [];
    for (let i = 0; i < l1Entries; i++) {
      const l2Offset = Number(l1.readBigUInt64BE(i * 8) & OFFSET_MASK);
      if (l2Offset === 0) continue;
      if (l2Offset % clusterBytes !== 0 || l2Offset + clusterBytes > fileBytes) {
        throw new ImageInvalid(`"${path}" has an L2 table at ${l2Offset}, outside the file or unaligned; check it with "qemu-img check"`);
      }
      const l2 = readFully(fd, clusterBytes, l2Offset);
      for (let j = 0; j < l2Entries; j++) {
        const start = (i * l2Entries + j) * clusterBytes;
        if (start >= sizeBytes) break;
        const entry = l2.readBigUInt64BE(j * 8);
        if ((entry & COMPRESSED) !== 0n || (entry & OFFSET_MASK) === 0n || (entry & COPIED) !== 0n) continue;
        const last = shared[shared.length - 1];
        if (last !== undefined && last.start + last.length === start) last.length += clusterBytes;
        else shared.push({ start, length: clusterBytes });
      }
    }
    return shared;
  } finally {
    closeSync(fd);
  }
}
