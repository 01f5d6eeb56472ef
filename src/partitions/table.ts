// The partition table of a disk (GPT, MBR with its logical chain, or none), read natively, and the sector writes
// that move its last partition's end or re-home its GPT backup for a new disk size.
import { ImageInvalid } from '../util/errors.js';
import { SECTOR_BYTES } from '../util/units.js';
import type { ByteSource } from './io.js';
import {
  type GptHeader,
  type SectorWrite,
  decodeGptEntries,
  decodeGptHeader,
  entriesBytes,
  gptWrites,
  validateGpt,
  withEntryEnd,
} from './gpt.js';
import { EXTENDED_TYPES, MAX_MBR_SECTORS, PROTECTIVE_TYPE, decodeMbrEntries, hasBootSignature, withEntrySectors } from './mbr.js';

export interface Partition {
  number: number;
  startSector: number;
  /** Inclusive, as in GPT entries and parted. */
  endSector: number;
  kind: 'gpt' | 'primary' | 'extended' | 'logical';
  /** GPT type GUID, or the MBR id as two hex digits. */
  typeId: string;
  /** MBR: the sector holding this entry (0 for primaries, the EBR for logicals) and its slot there. */
  entrySector?: number;
  entrySlot?: number;
}

export type PartitionTable =
  | { kind: 'none'; diskSectors: number }
  | { kind: 'gpt'; diskSectors: number; mbr: Buffer; primary: GptHeader; array: Buffer; partitions: Partition[] }
  | { kind: 'mbr'; diskSectors: number; sectors: Map<number, Buffer>; partitions: Partition[] };

const MAX_LOGICAL = 128;

function looksLikeBootSector(sector: Buffer): boolean {
  // A filesystem that starts at sector 0 (no table) may carry 0x55AA too: NTFS, FAT, exFAT boot sectors.
  const oem = sector.toString('latin1', 3, 11);
  return oem === 'NTFS    ' || oem === 'EXFAT   ' || sector.toString('latin1', 54, 59) === 'FAT12' || sector.toString('latin1', 82, 87) === 'FAT32';
}

async function readGpt(source: ByteSource, mbr: Buffer, diskSectors: number): Promise<PartitionTable> {
  const primary = decodeGptHeader(await source.read(SECTOR_BYTES, SECTOR_BYTES));
  if (!primary) throw new ImageInvalid('The disk has a protective MBR but no primary GPT header; repair the table with gdisk first');
  if (primary.entryCount * primary.entrySize > 1024 * 1024 || primary.entriesLba < 2 || primary.entriesLba >= diskSectors) {
    throw new ImageInvalid('The primary GPT header describes an impossible entry array; repair the table with gdisk first');
  }
  const array = await source.read(primary.entriesLba * SECTOR_BYTES, entriesBytes(primary));
  const findings = validateGpt(primary, array, diskSectors);
  if (findings.length > 0) throw new ImageInvalid('The GPT partition table is damaged (repair it with gdisk first)', findings);
  const partitions = decodeGptEntries(primary, array).map((entry) => ({
    number: entry.number,
    startSector: entry.startLba,
    endSector: entry.endLba,
    kind: 'gpt' as const,
    typeId: entry.typeGuid,
  }));
  return { kind: 'gpt', diskSectors, mbr, primary, array, partitions };
}

async function readMbr(source: ByteSource, mbr: Buffer, diskSectors: number): Promise<PartitionTable> {
  const sectors = new Map<number, Buffer>([[0, mbr]]);
  const partitions: Partition[] = [];
  const hex = (type: number): string => type.toString(16).padStart(2, '0');
  for (const entry of decodeMbrEntries(mbr)) {
    const kind = EXTENDED_TYPES.has(entry.type) ? 'extended' : 'primary';
    partitions.push({
      number: entry.slot + 1,
      startSector: entry.lbaStart,
      endSector: entry.lbaStart + entry.sectors - 1,
      kind,
      typeId: hex(entry.type),
      entrySector: 0,
      entrySlot: entry.slot,
    });
    if (kind !== 'extended') continue;
    // The logical chain: each EBR's slot 0 is relative to the EBR, slot 1 (the next EBR) to the container start.
    let ebrSector = entry.lbaStart;
    for (let number = 5; number < 5 + MAX_LOGICAL; number++) {
      if (sectors.has(ebrSector) || ebrSector >= diskSectors) throw new ImageInvalid(`The logical partition chain loops or leaves the disk at sector ${ebrSector}`);
      const ebr = await source.read(ebrSector * SECTOR_BYTES, SECTOR_BYTES);
      if (!hasBootSignature(ebr)) break;
      sectors.set(ebrSector, ebr);
      const [logical, next] = [decodeMbrEntries(ebr).find((e) => e.slot === 0), decodeMbrEntries(ebr).find((e) => e.slot === 1)];
      if (logical) {
        partitions.push({
          number,
          startSector: ebrSector + logical.lbaStart,
          endSector: ebrSector + logical.lbaStart + logical.sectors - 1,
          kind: 'logical',
          typeId: hex(logical.type),
          entrySector: ebrSector,
          entrySlot: 0,
        });
      }
      if (!next || !EXTENDED_TYPES.has(next.type)) break;
      ebrSector = entry.lbaStart + next.lbaStart;
    }
  }
  return { kind: 'mbr', diskSectors, sectors, partitions };
}

export async function readTable(source: ByteSource): Promise<PartitionTable> {
  const diskSectors = Math.floor(source.sizeBytes / SECTOR_BYTES);
  const mbr = await source.read(0, SECTOR_BYTES);
  if (!hasBootSignature(mbr) || looksLikeBootSector(mbr)) return { kind: 'none', diskSectors };
  const entries = decodeMbrEntries(mbr);
  // A boot sector whose "entries" are boot code: statuses other than 0x00/0x80 are not a table.
  const statuses = [0, 1, 2, 3].map((slot) => mbr[446 + slot * 16]!);
  if (entries.length === 0 || statuses.some((s) => s !== 0 && s !== 0x80)) return { kind: 'none', diskSectors };
  if (entries.some((e) => e.type === PROTECTIVE_TYPE)) return readGpt(source, mbr, diskSectors);
  return readMbr(source, mbr, diskSectors);
}

/** Checks that the partitions do not overlap (containers hold their logicals) and lie on the disk. */
export function validateLayout(table: PartitionTable): string[] {
  if (table.kind === 'none') return [];
  const findings: string[] = [];
  const flat = table.partitions.filter((p) => p.kind !== 'extended').sort((a, b) => a.startSector - b.startSector);
  for (const p of table.partitions) {
    if (p.endSector < p.startSector) findings.push(`partition ${p.number} ends before it starts`);
    if (p.endSector >= table.diskSectors) findings.push(`partition ${p.number} ends beyond the end of the disk`);
  }
  for (let i = 1; i < flat.length; i++) {
    if (flat[i]!.startSector <= flat[i - 1]!.endSector) findings.push(`partitions ${flat[i - 1]!.number} and ${flat[i]!.number} overlap`);
  }
  return findings;
}

/** The partition that ends last (never the extended container itself), or undefined for an empty table. */
export function lastPartition(table: PartitionTable): Partition | undefined {
  if (table.kind === 'none') return undefined;
  return table.partitions.filter((p) => p.kind !== 'extended').reduce<Partition | undefined>((a, b) => (!a || b.endSector > a.endSector ? b : a), undefined);
}

/** The container of a logical partition. */
export function extendedContainer(table: PartitionTable): Partition | undefined {
  return table.kind === 'mbr' ? table.partitions.find((p) => p.kind === 'extended') : undefined;
}

/** The end (inclusive) of everything the table allocates, the extended container included; -1 when empty. */
export function allocatedEndSector(table: PartitionTable): number {
  if (table.kind === 'none') return -1;
  return table.partitions.reduce((end, p) => Math.max(end, p.endSector), -1);
}

function protectiveMbr(mbr: Buffer, diskSectors: number): SectorWrite | undefined {
  const entry = decodeMbrEntries(mbr).find((e) => e.type === PROTECTIVE_TYPE);
  if (!entry) return undefined;
  const sectors = Math.min(diskSectors - entry.lbaStart, MAX_MBR_SECTORS);
  if (entry.sectors === sectors) return undefined;
  return { offsetBytes: 0, bytes: withEntrySectors(mbr, entry.slot, sectors, entry.lbaStart), what: 'protective MBR' };
}

/** True when a GPT disk's protective MBR does not give the size of a disk of `diskSectors`. */
export function protectiveMbrStale(table: PartitionTable, diskSectors: number): boolean {
  return table.kind === 'gpt' && protectiveMbr(table.mbr, diskSectors) !== undefined;
}

/**
 * The writes that make the table fit a disk of `diskSectors`, and give the last partition `newEndSector` when set
 * (with its extended container, for a logical one). GPT: backup entries and header at the new end, primary header,
 * protective MBR; on a grown disk, the old backup header is cleared so that no tool finds a stale table.
 */
export function tableWrites(table: PartitionTable, diskSectors: number, newEndSector?: number): SectorWrite[] {
  if (table.kind === 'none') return [];
  const last = lastPartition(table);
  if (table.kind === 'gpt') {
    const array = newEndSector !== undefined && last ? withEntryEnd(table.primary, table.array, last.number, newEndSector) : table.array;
    // The primary header goes last, after a flush: once it names the new backup, every other sector is durable,
    // and until then a rerun finds the primary stale and writes them all again (B14: a rerun that found the
    // primary done left a stale protective MBR or old backup header, which nothing else points at).
    const [backupEntries, backupHeader, primaryEntries, primaryHeader] = gptWrites(table.primary, array, diskSectors);
    const writes = [backupEntries!, backupHeader!];
    const mbr = protectiveMbr(table.mbr, diskSectors);
    if (mbr) writes.push(mbr);
    const oldBackup = table.primary.alternateLba;
    const keepsOld = newEndSector !== undefined && last !== undefined && oldBackup >= last.startSector && oldBackup <= newEndSector;
    if (oldBackup !== diskSectors - 1 && oldBackup < diskSectors - 1 - 32 && !keepsOld && oldBackup > 1) {
      writes.push({ offsetBytes: oldBackup * SECTOR_BYTES, bytes: Buffer.alloc(SECTOR_BYTES), what: 'old backup GPT header (cleared)' });
    }
    writes.push({ ...primaryEntries!, barrier: true }, primaryHeader!);
    return writes;
  }
  if (newEndSector === undefined || !last) return [];
  const writes: SectorWrite[] = [];
  const sector = (at: number): Buffer => table.sectors.get(at)!;
  if (last.kind === 'logical') {
    const container = extendedContainer(table)!;
    const growing = newEndSector > last.endSector;
    const containerWrite: SectorWrite = {
      offsetBytes: 0,
      bytes: withEntrySectors(sector(0), container.entrySlot!, newEndSector - container.startSector + 1, container.startSector),
      what: `extended partition ${container.number}`,
    };
    const logicalWrite: SectorWrite = {
      offsetBytes: last.entrySector! * SECTOR_BYTES,
      bytes: withEntrySectors(sector(last.entrySector!), 0, newEndSector - last.startSector + 1, last.startSector),
      what: `logical partition ${last.number}`,
    };
    // The container always covers its logicals: widen it first, narrow it last.
    writes.push(...(growing ? [containerWrite, logicalWrite] : [logicalWrite, containerWrite]));
  } else {
    writes.push({
      offsetBytes: 0,
      bytes: withEntrySectors(sector(0), last.entrySlot!, newEndSector - last.startSector + 1, last.startSector),
      what: `partition ${last.number}`,
    });
  }
  return writes;
}
