// Pure geometry: where the last partition may end on a disk of a given size, and the minimum disk sizes.
import { MiB, SECTOR_BYTES, alignUp } from '../util/units.js';
import { entriesSectors } from './gpt.js';
import { MAX_MBR_SECTORS } from './mbr.js';
import { type Partition, type PartitionTable, allocatedEndSector, lastPartition } from './table.js';

/** Sectors a GPT keeps after the last usable sector: backup entries (32 for 128 entries) and header. */
export function tailSectors(table: PartitionTable): number {
  return table.kind === 'gpt' ? entriesSectors(table.primary) + 1 : 0;
}

/** The last sector a partition may use on a disk of `diskSectors` (inclusive). */
export function lastUsableSector(table: PartitionTable, diskSectors: number): number {
  return diskSectors - 1 - tailSectors(table);
}

/**
 * Where the last partition ends on the new disk: the last usable sector. For MBR the 32-bit size field limits a
 * partition to 2^32 - 1 sectors; returns undefined when the partition cannot reach the end for that reason.
 */
export function targetEndSector(table: PartitionTable, last: Partition, diskSectors: number): number {
  const end = lastUsableSector(table, diskSectors);
  if (table.kind === 'mbr' && end - last.startSector + 1 > MAX_MBR_SECTORS) return last.startSector + MAX_MBR_SECTORS - 1;
  return end;
}

/** Sizes are reported and accepted in whole MiB (the SIZE argument's default unit). */
export function roundUpToMiB(bytes: number): number {
  return alignUp(bytes, MiB);
}

/** The smallest disk that keeps every partition as it is (or, without a table, the content's size). */
export function minimumKeepingLayout(table: PartitionTable, contentBytesWithoutTable: number): number {
  if (table.kind === 'none') return roundUpToMiB(Math.max(contentBytesWithoutTable, MiB));
  const end = allocatedEndSector(table);
  return roundUpToMiB((end + 1 + tailSectors(table)) * SECTOR_BYTES);
}

/** The smallest disk on which the last partition can hold content of `contentMinimumBytes`. */
export function minimumResizingLast(table: PartitionTable, contentMinimumBytes: number): number {
  if (table.kind === 'none') return roundUpToMiB(Math.max(contentMinimumBytes, MiB));
  const last = lastPartition(table);
  if (!last) return minimumKeepingLayout(table, 0);
  const contentSectors = Math.ceil(contentMinimumBytes / SECTOR_BYTES);
  const others = table.partitions.filter((p) => p !== last && p.kind !== 'extended').reduce((end, p) => Math.max(end, p.endSector), -1);
  const endSector = Math.max(last.startSector + contentSectors - 1, others);
  return roundUpToMiB((endSector + 1 + tailSectors(table)) * SECTOR_BYTES);
}
