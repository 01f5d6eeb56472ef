// The resize planner (pure): from the disk's facts, the target size and the content's measured minimum, the
// complete list of steps with the target geometry — or a refusal that says what to do instead.
import type { Plan } from '../../plan/plan.js';
import { Refused } from '../../util/errors.js';
import { MiB, SECTOR_BYTES, formatBytes, formatSizeArgument } from '../../util/units.js';
import type { SectorWrite } from '../../partitions/gpt.js';
import { lastUsableSector, tailSectors, targetEndSector } from '../../partitions/layout.js';
import { allocatedEndSector, protectiveMbrStale, tableWrites } from '../../partitions/table.js';
import type { DiskFacts } from './facts.js';
import { dataEndBytes, proofOf, smallestSizeText } from './minimum.js';

/** The two smallest sizes resize accepts (resize --info prints them), from the measured content and the no-cut rule. */
export interface SizeLimits {
  minimumBytes: number;
  minimumKeepLastPartitionBytes: number;
  /** The content's own minimum (margin included), when it was measured. */
  contentMinimumBytes?: number;
  warnings: string[];
}

export type ResizeStep =
  | { kind: 'grow-image'; fromBytes: number; toBytes: number; preallocate: boolean }
  | { kind: 'begin-overlay' }
  | { kind: 'shrink-content'; noun: string; type: string; device: string; toBytes: number }
  | { kind: 'write-table'; writes: SectorWrite[]; partition?: number; fromEndSector?: number; toEndSector?: number; diskSectors: number }
  | { kind: 'grow-content'; noun: string; type: string; device: string; toBytes: number }
  | { kind: 'resize-swap'; offsetBytes: number; toBytes: number }
  | { kind: 'commit-overlay' }
  | { kind: 'shrink-image'; fromBytes: number; toBytes: number };

export interface ResizePlan extends Plan<ResizeStep> {
  fromBytes: number;
  toBytes: number;
  /** Sentences for the user after success (advice, warnings that do not stop the plan). */
  advice: string[];
  warnings: string[];
  /** The content must be measured in the appliance before this plan can be final (see needsMeasurement). */
  usesOverlay: boolean;
}

export interface ResizeOptions {
  resizePartition: boolean;
  /** ploop: the partition follows the disk without the flag (docs/resize.md), so no refusal may advise dropping it. */
  impliedByFormat?: boolean;
  /** Measured limits; needed only when the content must shrink (see contentMustShrink). */
  limits?: SizeLimits;
}

export function describeStep(step: ResizeStep): string {
  switch (step.kind) {
    case 'grow-image':
      return step.preallocate
        ? `Grow the image from ${formatBytes(step.fromBytes)} to ${formatBytes(step.toBytes)}; the image is preallocated, so the new ${formatBytes(step.toBytes - step.fromBytes)} are allocated on the host now.`
        : `Grow the image from ${formatBytes(step.fromBytes)} to ${formatBytes(step.toBytes)}; the image is expanding, so the new space takes host space only as the guest writes it.`;
    case 'begin-overlay':
      return 'Record the following changes in a temporary overlay beside the image; the image itself stays untouched until the commit.';
    case 'shrink-content':
      return `Shrink ${step.noun} on ${step.device} to ${formatBytes(step.toBytes)}.`;
    case 'write-table':
      return step.partition !== undefined
        ? `Move the end of partition ${step.partition} from sector ${step.fromEndSector} to sector ${step.toEndSector} (start, type, GUID, name and flags kept) and write the table for ${step.diskSectors} sectors (${step.writes.map((w) => w.what).join(', ')}).`
        : `Rewrite the partition table for a disk of ${step.diskSectors} sectors (${step.writes.map((w) => w.what).join(', ')}).`;
    case 'grow-content':
      return `Grow ${step.noun} on ${step.device} to fill its ${formatBytes(step.toBytes)}.`;
    case 'resize-swap':
      return `Re-make the swap area for ${formatBytes(step.toBytes)}, keeping its UUID and label.`;
    case 'commit-overlay':
      return 'Commit the overlay into the image and remove it.';
    case 'shrink-image':
      return `Shrink the image from ${formatBytes(step.fromBytes)} to ${formatBytes(step.toBytes)}.`;
  }
}

/** Bytes the disk needs to keep every partition (or, without a table, the content) as it is; not rounded. */
export function structuralKeepBytes(facts: DiskFacts): number {
  if (facts.table.kind === 'none') return facts.content?.probe.sizeBytes ?? 0;
  return (allocatedEndSector(facts.table) + 1 + tailSectors(facts.table)) * SECTOR_BYTES;
}

/** The end of the data that no structure proves free (resize/minimum.ts), once the plan has rewritten the table. */
export function dataKeepBytes(facts: DiskFacts): number {
  return dataEndBytes(facts.allocated, proofOf(facts.table, facts.content, 'rewritten'));
}

/** The smallest disk that keeps every partition, the content and every allocated byte nothing proves free. */
export function exactKeepBytes(facts: DiskFacts): number {
  return Math.max(structuralKeepBytes(facts), dataKeepBytes(facts));
}

/** The container size the last partition (or the whole disk) gets on a disk of `targetBytes`. */
export function newContainerBytes(facts: DiskFacts, targetBytes: number): number {
  if (!facts.last) return targetBytes;
  const end = targetEndSector(facts.table, facts.last, Math.floor(targetBytes / SECTOR_BYTES));
  return (end - facts.last.startSector + 1) * SECTOR_BYTES;
}

/** True when --resize_partition to this size has to shrink the content, which needs its measured minimum. */
export function contentMustShrink(facts: DiskFacts, targetBytes: number): boolean {
  if (facts.table.kind !== 'none' && !facts.last) return false;
  const content = facts.content;
  return content !== undefined && !content.probe.damaged && content.probe.sizeBytes > newContainerBytes(facts, targetBytes);
}

/** The primary header is written last (tableWrites); a stale protective MBR is rewritten too (B14). */
function gptNeedsRewrite(facts: DiskFacts, diskSectors: number): boolean {
  if (facts.table.kind !== 'gpt') return false;
  const primary = facts.table.primary;
  return primary.alternateLba !== diskSectors - 1 || primary.lastUsableLba !== lastUsableSector(facts.table, diskSectors) || protectiveMbrStale(facts.table, diskSectors);
}

function keepLayoutPlan(facts: DiskFacts, targetBytes: number, viaFlag: boolean): ResizePlan {
  const size = facts.sizeBytes;
  const diskSectors = Math.floor(targetBytes / SECTOR_BYTES);
  const keep = exactKeepBytes(facts);
  if (targetBytes < size && targetBytes < keep && dataKeepBytes(facts) > structuralKeepBytes(facts)) {
    throw new Refused(
      `Cannot shrink the disk to ${formatBytes(targetBytes)}: it holds data up to ${formatBytes(keep)} (allocated clusters that no partition table or filesystem ` +
        `shows to be free; content prl_disk_tool does not recognise counts as data), and resize never cuts data. The smallest size it accepts is ${smallestSizeText(keep)}; resize --info reports it as the Minimum.`,
    );
  }
  if (targetBytes < size && targetBytes < keep) {
    const what = facts.table.kind === 'none' ? `the ${facts.content?.fs.type ?? ''} filesystem spans ${formatBytes(keep)}` : `partition ${facts.last?.number ?? ''} ends at ${formatBytes(keep)}`;
    throw new Refused(
      `Cannot shrink the disk to ${formatBytes(targetBytes)}: ${what}, and resize without --resize_partition never cuts data. ` +
        `The smallest size it accepts is ${formatSizeArgument(keep)}; to shrink the last partition and its filesystem too, add --resize_partition (resize --info shows the Minimum).`,
    );
  }
  const steps: ResizeStep[] = [];
  if (targetBytes > size) steps.push({ kind: 'grow-image', fromBytes: size, toBytes: targetBytes, preallocate: facts.plain });
  if (gptNeedsRewrite(facts, diskSectors)) steps.push({ kind: 'write-table', writes: tableWrites(facts.table, diskSectors), diskSectors });
  if (targetBytes < size) steps.push({ kind: 'shrink-image', fromBytes: size, toBytes: targetBytes });
  const advice: string[] = [];
  if (targetBytes > size && !viaFlag) {
    advice.push(
      `The new ${formatBytes(targetBytes - size)} lie outside every partition; resize --resize_partition would give them to the last partition and its filesystem.`,
    );
  }
  return { summary: summaryOf(size, targetBytes, steps.length === 0), steps, fromBytes: size, toBytes: targetBytes, advice, warnings: [], usesOverlay: false };
}

function summaryOf(from: number, to: number, unchanged: boolean): string {
  if (unchanged) return `The disk is already ${formatBytes(to)}; nothing to do.`;
  return `Resize the disk from ${formatBytes(from)} to ${formatBytes(to)}:`;
}

export function planResize(facts: DiskFacts, targetBytes: number, options: ResizeOptions): ResizePlan {
  if (targetBytes % SECTOR_BYTES !== 0) throw new Refused('The size must be a whole number of 512-byte sectors.');
  if (!options.resizePartition || (facts.table.kind !== 'none' && !facts.last)) return keepLayoutPlan(facts, targetBytes, options.resizePartition);
  const size = facts.sizeBytes;
  const diskSectors = Math.floor(targetBytes / SECTOR_BYTES);
  const last = facts.last;
  const content = facts.content;
  const containerNew = newContainerBytes(facts, targetBytes);
  const endNew = last ? targetEndSector(facts.table, last, diskSectors) : undefined;
  if (last && facts.table.kind === 'mbr' && endNew! < lastUsableSector(facts.table, diskSectors)) {
    throw new Refused(`An MBR partition cannot exceed 2 TiB; partition ${last.number} cannot reach the end of a ${formatBytes(targetBytes)} disk. Convert the table to GPT first, or choose a smaller size.`);
  }
  const warnings: string[] = [];
  // Without a table, unrecognised content is kept as it is: the disk may shrink down to its last allocated byte.
  if (!content && !last) return keepLayoutPlan(facts, targetBytes, true);
  if (!content) {
    const what = `Partition ${last!.number}`;
    if (containerNew < facts.containerBytes) {
      throw new Refused(`${what} holds content that prl_disk_tool does not recognise, so it cannot be shrunk safely; choose at least ${formatSizeArgument(exactKeepBytes(facts))}${options.impliedByFormat ? '' : ', or resize without --resize_partition'}.`);
    }
    warnings.push(`${what} holds content that prl_disk_tool does not recognise: the partition grows, its content is left as it is.`);
  } else if (content.probe.damaged) {
    throw new Refused(`Cannot resize ${last ? `partition ${last.number}` : 'the disk'}: ${content.probe.damaged}.`);
  }
  const shrinkContent = content !== undefined && content.probe.sizeBytes > containerNew;
  if (shrinkContent && content.fs.cannotShrink) {
    throw new Refused(
      `${last ? `Partition ${last.number}` : 'The disk'} holds ${content.fs.noun}, which cannot shrink (${content.fs.cannotShrink}); grow the disk instead, or move the data off first. ` +
        `The smallest size is ${formatSizeArgument(exactKeepBytes(facts))}.`,
    );
  }
  if (shrinkContent) {
    const limits = options.limits;
    if (!limits || limits.contentMinimumBytes === undefined) throw new Refused(`Cannot shrink ${content.fs.noun}: ${limits?.warnings.join(' ') ?? 'its minimum size is unknown.'}`);
    if (targetBytes < limits.minimumBytes) {
      throw new Refused(
        `Cannot shrink the disk to ${formatBytes(targetBytes)}: the minimum is ${formatSizeArgument(limits.minimumBytes)} (resize --info), because ${content.fs.noun} needs ${formatBytes(limits.contentMinimumBytes)}. ` +
          `Free at least ${formatBytes(limits.minimumBytes - targetBytes)} inside the guest first, or choose ${formatSizeArgument(limits.minimumBytes)} or more.`,
      );
    }
  }
  const moveEnd = last !== undefined && endNew !== last.endSector;
  // Fit: content that no longer reaches the moved end grows to it, however little the end moved (NTFS's backup
  // boot sector must be the partition's last sector; docs/resize.md, "Fill rule").
  const growContent =
    content !== undefined &&
    !shrinkContent &&
    (containerNew - content.probe.sizeBytes >= MiB || (moveEnd && content.probe.sizeBytes < content.fs.fitBytes(containerNew, content.probe)));
  const steps: ResizeStep[] = [];
  const device = facts.guestDevice;
  const contentStep = (kind: 'shrink-content' | 'grow-content'): ResizeStep =>
    content!.fs.resizeNative
      ? { kind: 'resize-swap', offsetBytes: facts.containerStartBytes, toBytes: containerNew }
      : // fitBytes: the size at which the content fills the new container as its format expects, so that the
        // shrink lands exactly and no fit step is needed after the table moves (docs/resize.md, "Fill rule").
        { kind, noun: content!.fs.noun, type: content!.fs.type, device, toBytes: content!.fs.fitBytes(containerNew, content!.probe) };
  if (targetBytes > size) steps.push({ kind: 'grow-image', fromBytes: size, toBytes: targetBytes, preallocate: facts.plain });
  if (shrinkContent || growContent || moveEnd) steps.push({ kind: 'begin-overlay' });
  if (shrinkContent) steps.push(contentStep('shrink-content'));
  if (moveEnd || gptNeedsRewrite(facts, diskSectors)) {
    const write: ResizeStep = { kind: 'write-table', writes: tableWrites(facts.table, diskSectors, moveEnd ? endNew : undefined), diskSectors };
    if (moveEnd) Object.assign(write, { partition: last!.number, fromEndSector: last!.endSector, toEndSector: endNew });
    steps.push(write);
  }
  if (growContent) steps.push(contentStep('grow-content'));
  const usesOverlay = steps.some((s) => s.kind === 'begin-overlay');
  if (usesOverlay) steps.push({ kind: 'commit-overlay' });
  if (targetBytes < size) steps.push({ kind: 'shrink-image', fromBytes: size, toBytes: targetBytes });
  return { summary: summaryOf(size, targetBytes, steps.length === 0), steps, fromBytes: size, toBytes: targetBytes, advice: [], warnings, usesOverlay };
}
