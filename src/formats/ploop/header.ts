// The 64-byte ploop/parallels delta header: one field table drives both decoding and encoding.
// Offsets and meanings: QEMU docs/interop/parallels.txt "Header"; OpenVZ ploop include/ploop1_image.h
// (struct ploop_pvd_header; QEMU's "version" is ploop's m_Type, "tracks" is m_Sectors = cluster size).

export const HEADER_BYTES = 64;
export const SIGNATURE_V1 = 'WithoutFreeSpace';
export const SIGNATURE_V2 = 'WithouFreSpacExt';
export const HEADER_VERSION = 2;
/** m_DiskInUse while a writer has the delta open ("Ynot"). */
export const IN_USE_OPEN = 0x746f6e59;
/**
 * m_DiskInUse after a clean close by software that knows the format extension ("v2.1"). Accepted on
 * read; never written: ploop 1.x check takes any non-zero value as "Dirty flag is set", and ploop's
 * copy_delta (container migration) refuses it.
 */
export const IN_USE_CLOSED_V21 = 0x312e3276;
/** m_DiskInUse after a clean close: what ploop's own check writes, and what we write. */
export const IN_USE_CLOSED_V20 = 0;
/**
 * ploop's CIF_Empty ("no data was written"). ploop 1.x check (lib/check.c before 2020) requires it set
 * exactly when the file holds no cluster past the BAT area, and rewrites it otherwise; later ploop
 * ignores it. ploop init sets it; see closedFlags() in delta.ts for how we keep it.
 */
export const FLAG_EMPTY = 0x1;
/** ploop's CIF_FmtVersionConvert: a v1 → v2 conversion was in progress. */
export const FLAG_VERSION_CONVERT = 0x2;

export interface PloopHeader {
  /** 16 bytes, latin1: SIGNATURE_V1 or SIGNATURE_V2 for a valid delta. */
  magic: string;
  version: number;
  heads: number;
  cylinders: number;
  clusterSectors: number;
  batEntries: number;
  /** Virtual size; a u64 on disk (only the low half counts for v1). */
  sizeSectors: number;
  inUse: number;
  /** Start of the data area; 0 on a v1 delta means "right after the BAT, sector aligned". */
  dataOffsetSectors: number;
  flags: number;
  /** Format extension cluster; 0 when absent. */
  extOffsetSectors: number;
}

type FieldName = keyof PloopHeader;
interface Field {
  name: FieldName;
  offset: number;
  width: 16 | 8 | 4;
}

/** The header, byte by byte (parallels.txt, "Header"). */
export const HEADER_FIELDS: readonly Field[] = [
  { name: 'magic', offset: 0, width: 16 },
  { name: 'version', offset: 16, width: 4 },
  { name: 'heads', offset: 20, width: 4 },
  { name: 'cylinders', offset: 24, width: 4 },
  { name: 'clusterSectors', offset: 28, width: 4 },
  { name: 'batEntries', offset: 32, width: 4 },
  { name: 'sizeSectors', offset: 36, width: 8 },
  { name: 'inUse', offset: 44, width: 4 },
  { name: 'dataOffsetSectors', offset: 48, width: 4 },
  { name: 'flags', offset: 52, width: 4 },
  { name: 'extOffsetSectors', offset: 56, width: 8 },
];

/** The one place where on-disk u64 values become numbers: values past 2^53 saturate (they fail validation anyway). */
function u64ToNumber(value: bigint): number {
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

export function decodeHeader(buf: Uint8Array): PloopHeader {
  if (buf.length < HEADER_BYTES) {
    throw new RangeError(`a ploop header is ${HEADER_BYTES} bytes, got ${buf.length}`);
  }
  const view = Buffer.from(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const out: Record<string, string | number> = {};
  for (const field of HEADER_FIELDS) {
    if (field.width === 16) out[field.name] = view.toString('latin1', field.offset, field.offset + 16);
    else if (field.width === 8) out[field.name] = u64ToNumber(view.readBigUInt64LE(field.offset));
    else out[field.name] = view.readUInt32LE(field.offset);
  }
  return out as unknown as PloopHeader;
}

export function encodeHeader(header: PloopHeader): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES);
  for (const field of HEADER_FIELDS) {
    const value = header[field.name];
    if (field.width === 16) {
      const bytes = Buffer.from(String(value), 'latin1');
      if (bytes.length !== 16) throw new RangeError(`header field ${field.name} must be 16 bytes`);
      bytes.copy(buf, field.offset);
    } else if (field.width === 8) {
      buf.writeBigUInt64LE(BigInt(value as number), field.offset);
    } else {
      buf.writeUInt32LE(value as number, field.offset);
    }
  }
  return buf;
}

export type FormatVersion = 1 | 2;

/** 1 for "WithoutFreeSpace" (BAT holds sector offsets), 2 for "WithouFreSpacExt" (BAT holds cluster indices). */
export function formatVersion(header: PloopHeader): FormatVersion | undefined {
  if (header.magic === SIGNATURE_V1) return 1;
  if (header.magic === SIGNATURE_V2) return 2;
  return undefined;
}

export function clusterBytes(header: PloopHeader): number {
  return header.clusterSectors * 512;
}

/** The virtual size that counts: v1 uses only the low 32 bits (parallels.txt, nb_sectors). */
export function effectiveSizeSectors(header: PloopHeader): number {
  return formatVersion(header) === 1 ? header.sizeSectors % 2 ** 32 : header.sizeSectors;
}

/** Where the data area starts, in bytes (a v1 delta may leave data_off at 0). */
export function dataOffsetBytes(header: PloopHeader): number {
  if (header.dataOffsetSectors !== 0) return header.dataOffsetSectors * 512;
  return Math.ceil((HEADER_BYTES + 4 * header.batEntries) / 512) * 512;
}

/** Cylinders for a geometry of `heads` × 32 sectors, as QEMU's parallels_co_create computes them. */
export function cylindersFor(sizeSectors: number, heads: number): number {
  const h = heads > 0 ? heads : 16;
  return Math.min(0xffffffff, Math.floor(sizeSectors / h / 32));
}
