// The block allocation table: little-endian u32 slots right after the header (parallels.txt, "BAT").
// Slot i maps virtual cluster i; 0 means unallocated. v2 ("WithouFreSpacExt") stores the cluster index
// counted from the start of the file, v1 ("WithoutFreeSpace") the offset in sectors (ploop_ioff_to_sec).
import { HEADER_BYTES, type PloopHeader, clusterBytes, dataOffsetBytes, formatVersion } from './header.js';

/** Byte offset in the file of BAT slot `index`. */
export function slotOffset(index: number): number {
  return HEADER_BYTES + 4 * index;
}

/** The host byte offset a non-zero entry points at. */
export function entryToOffset(header: PloopHeader, entry: number): number {
  return formatVersion(header) === 1 ? entry * 512 : entry * clusterBytes(header);
}

/** The entry that points at `offsetBytes`; throws when the offset cannot be expressed in 32 bits. */
export function offsetToEntry(header: PloopHeader, offsetBytes: number): number {
  const unit = formatVersion(header) === 1 ? 512 : clusterBytes(header);
  if (offsetBytes % unit !== 0) throw new RangeError(`offset ${offsetBytes} is not a multiple of ${unit}`);
  const entry = offsetBytes / unit;
  if (entry > 0xffffffff) throw new RangeError(`offset ${offsetBytes} does not fit a BAT entry`);
  return entry;
}

/**
 * How many slots the table region holds: from byte 64 up to the data area. Slots past batEntries
 * ("slack") must be zero. Bounded by the file size so that a hostile header cannot make us read
 * gigabytes that are not there.
 */
export function tableSlots(header: PloopHeader, fileSizeBytes: number): number {
  const end = Math.min(dataOffsetBytes(header), fileSizeBytes);
  return Math.max(0, Math.floor((end - HEADER_BYTES) / 4));
}

export function decodeBat(bytes: Uint8Array): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const slots = new Uint32Array(Math.floor(bytes.byteLength / 4));
  for (let i = 0; i < slots.length; i++) slots[i] = view.getUint32(4 * i, true);
  return slots;
}
export function encodeEntry(entry: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32LE(entry, 0);
  return buf;
}
