// MBR and EBR codec: four 16-byte entries at offset 446, signature 0x55AA at 510 (the IBM PC layout; the
// extended-partition chain as Linux reads it: block/partitions/msdos.c).
import { SECTOR_BYTES } from '../util/units.js';

export const ENTRY_TABLE_OFFSET = 446;
const ENTRY_BYTES = 16;
/** Entry fields: status @0, CHS first @1 (3), type @4, CHS last @5 (3), LBA start @8 (u32), sectors @12 (u32). */
const F = { status: 0, chsFirst: 1, type: 4, chsLast: 5, lbaStart: 8, sectors: 12 } as const;

export const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
export const PROTECTIVE_TYPE = 0xee;
export const MAX_MBR_SECTORS = 0xffffffff;

export interface MbrEntry {
  /** Slot 0..3 in its sector. */
  slot: number;
  bootable: boolean;
  type: number;
  /** Relative to the sector's base (0 for the MBR; see readLogicalChain for EBRs). */
  lbaStart: number;
  sectors: number;
}

export function hasBootSignature(sector: Buffer): boolean {
  return sector.length >= SECTOR_BYTES && sector[510] === 0x55 && sector[511] === 0xaa;
}

export function decodeMbrEntries(sector: Buffer): MbrEntry[] {
  const entries: MbrEntry[] = [];
  for (let slot = 0; slot < 4; slot++) {
    const at = ENTRY_TABLE_OFFSET + slot * ENTRY_BYTES;
    const type = sector[at + F.type]!;
    const sectors = sector.readUInt32LE(at + F.sectors);
    if (type === 0 || sectors === 0) continue;
    entries.push({ slot, bootable: sector[at + F.status] === 0x80, type, lbaStart: sector.readUInt32LE(at + F.lbaStart), sectors });
  }
  return entries;
}

/** CHS for an LBA with the 255-head, 63-sector geometry every tool assumes; beyond cylinder 1023 the maximum. */
export function chsBytes(lba: number): Buffer {
  const heads = 255;
  const perTrack = 63;
  const cylinder = Math.floor(lba / (heads * perTrack));
  if (cylinder > 1023) return Buffer.from([0xfe, 0xff, 0xff]);
  const head = Math.floor(lba / perTrack) % heads;
  const sector = (lba % perTrack) + 1;
  return Buffer.from([head, ((cylinder >> 2) & 0xc0) | sector, cylinder & 0xff]);
}

/** The sector with one entry's size changed (and its CHS end); every other byte kept, id and bootable flag included. */
export function withEntrySectors(sector: Buffer, slot: number, sectors: number, absoluteStart: number): Buffer {
  const copy = Buffer.from(sector.subarray(0, SECTOR_BYTES));
  const at = ENTRY_TABLE_OFFSET + slot * ENTRY_BYTES;
  copy.writeUInt32LE(sectors, at + F.sectors);
  chsBytes(absoluteStart + sectors - 1).copy(copy, at + F.chsLast);
  return copy;
}
