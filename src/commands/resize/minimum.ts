// The rule that no resize cuts data (pure): content the tool does not recognise is data, so a disk may shrink only
// down to the end of the last allocated byte that no structure the tool understands proves free.
import { type Range, intersect } from '../../util/ranges.js';
import type { PartitionTable } from '../../partitions/table.js';
import { entriesSectors } from '../../partitions/gpt.js';
import type { Identified } from '../../fs/registry.js';
import { Refused } from '../../util/errors.js';
import { MiB, SECTOR_BYTES, alignUp, formatBytes, formatSizeArgument } from '../../util/units.js';

/** What the structures the tool understands say about where data may lie. */
export type Proof =
  /** Nothing recognised: every allocated byte is data. */
  | { kind: 'nothing' }
  /** No partition table; a filesystem starts the disk and its own size ends at endBytes. */
  | { kind: 'filesystem'; endBytes: number }
  /** A partition table: its partitions and its own sectors may hold data, every other byte is free. */
  | { kind: 'table'; holds: Range[] };

/** The end of the last allocated byte that the proof does not show to be free; 0 when there is none. */
export function dataEndBytes(allocated: readonly Range[], proof: Proof): number {
  const kept =
    proof.kind === 'nothing' ? allocated : intersect(allocated, proof.kind === 'filesystem' ? [{ start: 0, length: proof.endBytes }] : proof.holds);
  return alignUp(
    kept.reduce((end, r) => (r.length > 0 ? Math.max(end, r.start + r.length) : end), 0),
    SECTOR_BYTES,
  );
}

const sectors = (first: number, count: number): Range => ({ start: first * SECTOR_BYTES, length: count * SECTOR_BYTES });

/**
 * The proof that `table` (and, without a table, the content at the disk's start) gives. `gptBackup`: 'rewritten'
 * while planning (every size change writes the GPT backup at the new end, so the old one holds nothing to keep),
 * 'as-is' at the cut, where the table on the image is the final one and its backup must survive.
 */
export function proofOf(table: PartitionTable, content: Identified | undefined, gptBackup: 'rewritten' | 'as-is'): Proof {
  if (table.kind === 'none') return content ? { kind: 'filesystem', endBytes: content.probe.sizeBytes } : { kind: 'nothing' };
  // Sector 0: the MBR or the protective MBR; the EBRs of logical partitions lie inside the extended one.
  const holds = [sectors(0, 1), ...table.partitions.map((p) => sectors(p.startSector, p.endSector - p.startSector + 1))];
  if (table.kind === 'gpt') {
    const header = table.primary;
    const entries = entriesSectors(header);
    holds.push(sectors(1, 1), sectors(header.entriesLba, entries));
    if (gptBackup === 'as-is') holds.push(sectors(header.alternateLba - entries, entries + 1));
  }
  return { kind: 'table', holds };
}

/** The size as SIZE spells it exactly (rounded up to whole KiB, the smallest unit SIZE has): 41216K, 41M, 2G. */
export function formatExactSize(bytes: number): string {
  const kib = Math.ceil(bytes / 1024);
  if (kib % (1024 * 1024) === 0) return `${kib / (1024 * 1024)}G`;
  if (kib % 1024 === 0) return `${kib / 1024}M`;
  return `${kib}K`;
}

/** "41M", or "41216K (resize --info rounds it up to 41M)" when the exact size is not whole MiB. */
export function smallestSizeText(bytes: number): string {
  const exact = formatExactSize(bytes);
  const mib = formatSizeArgument(Math.max(bytes, MiB));
  return exact === mib ? exact : `${exact} (resize --info rounds it up to ${mib})`;
}

/** The last guard before an image is cut: refuses a size below the end of data that nothing proves free. */
export function assertCutIsFree(targetBytes: number, dataEnd: number, imageName: string): void {
  if (targetBytes >= dataEnd) return;
  throw new Refused(
    `Cannot shrink "${imageName}" to ${formatBytes(targetBytes)}: the image holds data up to ${formatBytes(dataEnd)} that no partition table or ` +
      `filesystem shows to be free, and prl_disk_tool never cuts data; the image was not shrunk. The smallest safe size is ${smallestSizeText(dataEnd)}.`,
  );
}
