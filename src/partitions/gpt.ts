// GPT header and entry array codec (UEFI 2.10 §5.3.2 "GPT Header", §5.3.3 "GPT Partition Entry Array").
import { crc32 } from 'node:zlib';
import { ImageInvalid } from '../util/errors.js';
import { SECTOR_BYTES } from '../util/units.js';

export const GPT_SIGNATURE = 'EFI PART';

/** Header fields (offset, width in bytes) from UEFI 2.10 table 5.5; the header is 92 bytes in revision 1.0. */
const H = {
  signature: [0, 8],
  revision: [8, 4],
  headerSize: [12, 4],
  headerCrc: [16, 4],
  myLba: [24, 8],
  alternateLba: [32, 8],
  firstUsableLba: [40, 8],
  lastUsableLba: [48, 8],
  diskGuid: [56, 16],
  entriesLba: [72, 8],
  entryCount: [80, 4],
  entrySize: [84, 4],
  entriesCrc: [88, 4],
} as const;

/** Entry fields from UEFI 2.10 table 5.6. */
const E = { typeGuid: [0, 16], guid: [16, 16], startLba: [32, 8], endLba: [40, 8], attributes: [48, 8], name: [56, 72] } as const;

export interface GptHeader {
  /** The whole 512-byte header sector as read; encode patches the fields below into a copy of it. */
  sector: Buffer;
  headerSize: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
  headerCrc: number;
}

export interface GptEntry {
  /** 1-based, as Linux numbers GPT partitions (the slot index + 1). */
  number: number;
  typeGuid: string;
  guid: string;
  startLba: number;
  endLba: number;
  attributes: bigint;
  name: string;
}

function u64(buffer: Buffer, [offset]: readonly [number, number]): number {
  const value = buffer.readBigUInt64LE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageInvalid(`GPT field at offset ${offset} is out of range (${value})`);
  return Number(value);
}

function u32(buffer: Buffer, [offset]: readonly [number, number]): number {
  return buffer.readUInt32LE(offset);
}

/** GUIDs are stored mixed-endian: the first three groups little-endian (RFC 4122 vs. Microsoft layout). */
export function decodeGuid(bytes: Buffer): string {
  const hex = (b: Buffer): string => b.toString('hex');
  const le = (b: Buffer): string => hex(Buffer.from(b).reverse());
  return [le(bytes.subarray(0, 4)), le(bytes.subarray(4, 6)), le(bytes.subarray(6, 8)), hex(bytes.subarray(8, 10)), hex(bytes.subarray(10, 16))]
    .join('-')
    .toUpperCase();
}

export function headerChecksum(sector: Buffer, headerSize: number): number {
  const copy = Buffer.from(sector.subarray(0, headerSize));
  copy.writeUInt32LE(0, H.headerCrc[0]);
  return crc32(copy);
}

/** Decodes a header sector; does not judge beyond what is needed to read it safely (see validateGpt). */
export function decodeGptHeader(sector: Buffer): GptHeader | undefined {
  if (sector.length < SECTOR_BYTES || sector.toString('latin1', 0, 8) !== GPT_SIGNATURE) return undefined;
  const headerSize = u32(sector, H.headerSize);
  return {
    sector: Buffer.from(sector.subarray(0, SECTOR_BYTES)),
    headerSize,
    myLba: u64(sector, H.myLba),
    alternateLba: u64(sector, H.alternateLba),
    firstUsableLba: u64(sector, H.firstUsableLba),
    lastUsableLba: u64(sector, H.lastUsableLba),
    entriesLba: u64(sector, H.entriesLba),
    entryCount: u32(sector, H.entryCount),
    entrySize: u32(sector, H.entrySize),
    entriesCrc: u32(sector, H.entriesCrc),
    headerCrc: u32(sector, H.headerCrc),
  };
}

export function entriesBytes(header: GptHeader): number {
  return header.entryCount * header.entrySize;
}

export function entriesSectors(header: GptHeader): number {
  return Math.ceil(entriesBytes(header) / SECTOR_BYTES);
}

/** Used entries (type GUID not zero), numbered by slot. */
export function decodeGptEntries(header: GptHeader, array: Buffer): GptEntry[] {
  const entries: GptEntry[] = [];
  for (let slot = 0; slot < header.entryCount; slot++) {
    const raw = array.subarray(slot * header.entrySize, (slot + 1) * header.entrySize);
    if (raw.subarray(0, 16).every((b) => b === 0)) continue;
    const nameBytes = raw.subarray(E.name[0], E.name[0] + E.name[1]);
    entries.push({
      number: slot + 1,
      typeGuid: decodeGuid(raw.subarray(0, 16)),
      guid: decodeGuid(raw.subarray(16, 32)),
      startLba: u64(raw, E.startLba),
      endLba: u64(raw, E.endLba),
      attributes: raw.readBigUInt64LE(E.attributes[0]),
      name: nameBytes.toString('utf16le').replace(/\0.*$/s, ''),
    });
  }
  return entries;
}

/** One rule → one finding. */
export function validateGpt(header: GptHeader, array: Buffer, diskSectors: number): string[] {
  const findings: string[] = [];
  if (header.headerSize < 92 || header.headerSize > SECTOR_BYTES) findings.push(`GPT header size ${header.headerSize} is outside 92..512`);
  else if (headerChecksum(header.sector, header.headerSize) !== header.headerCrc) findings.push('GPT header checksum does not match');
  if (header.entrySize < 128 || header.entrySize % 8 !== 0) findings.push(`GPT entry size ${header.entrySize} is invalid`);
  if (header.entryCount === 0 || header.entryCount > 1024) findings.push(`GPT entry count ${header.entryCount} is outside 1..1024`);
  if (findings.length === 0 && crc32(array.subarray(0, entriesBytes(header))) !== header.entriesCrc) {
    findings.push('GPT partition entry array checksum does not match');
  }
  if (header.firstUsableLba > header.lastUsableLba) findings.push('GPT first usable LBA lies after the last usable LBA');
  if (header.lastUsableLba >= diskSectors) findings.push(`GPT last usable LBA ${header.lastUsableLba} lies beyond the disk (${diskSectors} sectors)`);
  if (findings.length === 0) {
    for (const entry of decodeGptEntries(header, array)) {
      if (entry.startLba > entry.endLba) findings.push(`GPT partition ${entry.number} ends before it starts`);
      else if (entry.startLba < header.firstUsableLba || entry.endLba > header.lastUsableLba) {
        findings.push(`GPT partition ${entry.number} lies outside the usable area`);
      }
    }
  }
  return findings;
}

function withHeaderFields(header: GptHeader, fields: Partial<Record<'myLba' | 'alternateLba' | 'lastUsableLba' | 'entriesLba' | 'entriesCrc', number>>): Buffer {
  const sector = Buffer.from(header.sector);
  for (const [name, value] of Object.entries(fields) as [keyof typeof H, number][]) {
    const [offset, width] = H[name];
    if (width === 8) sector.writeBigUInt64LE(BigInt(value), offset);
    else sector.writeUInt32LE(value, offset);
  }
  sector.writeUInt32LE(headerChecksum(sector, header.headerSize), H.headerCrc[0]);
  return sector;
}

/** The entry array with one entry's end LBA changed (every other byte kept: GUIDs, name, attributes). */
export function withEntryEnd(header: GptHeader, array: Buffer, number: number, endLba: number): Buffer {
  const copy = Buffer.from(array.subarray(0, entriesBytes(header)));
  copy.writeBigUInt64LE(BigInt(endLba), (number - 1) * header.entrySize + E.endLba[0]);
  return copy;
}

export interface SectorWrite {
  offsetBytes: number;
  bytes: Buffer;
  what: string;
  /** Every earlier write must be durable before this one starts (the writer flushes in between). */
  barrier?: boolean;
}

/**
 * The writes that make a GPT describe a disk of `diskSectors`, with `array` as its entries: backup entries and
 * backup header at the end first, then the primary header (entries CRC, alternate and last usable LBA). The
 * order matters for crashes: until the primary is rewritten, it still describes a valid (older) table.
 */
export function gptWrites(primary: GptHeader, array: Buffer, diskSectors: number): SectorWrite[] {
  const sectors = entriesSectors(primary);
  const padded = Buffer.alloc(sectors * SECTOR_BYTES);
  array.copy(padded, 0, 0, entriesBytes(primary));
  const entriesCrc = crc32(padded.subarray(0, entriesBytes(primary)));
  const lastLba = diskSectors - 1;
  const backupEntriesLba = lastLba - sectors;
  const lastUsableLba = backupEntriesLba - 1;
  const backup = withHeaderFields(primary, { myLba: lastLba, alternateLba: 1, entriesLba: backupEntriesLba, lastUsableLba, entriesCrc });
  const newPrimary = withHeaderFields(primary, { myLba: 1, alternateLba: lastLba, entriesLba: primary.entriesLba, lastUsableLba, entriesCrc });
  return [
    { offsetBytes: backupEntriesLba * SECTOR_BYTES, bytes: padded, what: 'backup GPT entries' },
    { offsetBytes: lastLba * SECTOR_BYTES, bytes: backup, what: 'backup GPT header' },
    { offsetBytes: primary.entriesLba * SECTOR_BYTES, bytes: padded, what: 'primary GPT entries' },
    { offsetBytes: SECTOR_BYTES, bytes: newPrimary, what: 'primary GPT header' },
  ];
}
