// What compact releases inside the guest disk: the layout the appliance sees, the pure plan of trims and
// discards over it, the checks that refuse unsafe filesystems, and the guest side of running the plan.
import type { GuestSession } from '../../guest/session.js';
import { listDevices, listPartitions, mbrAttributes, tableType, type TableType } from '../../guest/partitions.js';
import { deviceSizeBytes } from '../../guest/partitions.js';
import { extState, fstrim, listFilesystems, mount, ntfsWritable, unmountAll, blkdiscard } from '../../guest/filesystems.js';
import { lvcreateFree, lvremove, logicalVolumes, volumeGroups } from '../../guest/lvm.js';
import { Refused } from '../../util/errors.js';
import { formatBytes } from '../../util/units.js';
import { alignInward, subtract, type Range } from '../../util/ranges.js';

/** Filesystems whose free space fstrim can release (ntfs through ntfs-3g, which implements FITRIM). */
export const TRIMMABLE = new Set(['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'ntfs', 'vfat']);
/** Swap keeps its first page: the header with the signature, UUID and label. */
export const SWAP_HEADER_BYTES = 4096;
/** The temporary LV that covers a volume group's free extents while they are discarded. */
export const FREE_SPACE_LV = 'prl_compact_free';

export interface LayoutPartition {
  number: number;
  startByte: number;
  /** Exclusive. */
  endByte: number;
  extended: boolean;
}

export interface GuestLayout {
  device: string;
  diskBytes: number;
  /**
   * End of the space partitions may use: for GPT the primary header's last usable LBA + 1 (read natively; the
   * backup entry array and header lie past it, and their size depends on the entry count), else the disk's end.
   */
  usableEndByte: number;
  table: TableType;
  partitions: LayoutPartition[];
  /** Device → type as list-filesystems reports it (partitions, whole disk, logical volumes). */
  filesystems: Record<string, string>;
  volumeGroups: { name: string; freeBytes: number }[];
}

export type TrimStep =
  | { kind: 'trim-filesystem'; device: string; fsType: string }
  | { kind: 'discard-swap'; device: string; range: Range }
  | { kind: 'discard-gap'; range: Range }
  | { kind: 'discard-vg-free'; vg: string; freeBytes: number };

export function describeTrimStep(step: TrimStep): string {
  switch (step.kind) {
    case 'trim-filesystem':
      return `Trim the free space of the ${step.fsType} filesystem on ${step.device}.`;
    case 'discard-swap':
      return `Discard the swap space on ${step.device} after its header (${formatBytes(step.range.length)} from byte ${step.range.start} of the disk).`;
    case 'discard-gap':
      return `Discard ${formatBytes(step.range.length)} outside any partition, from byte ${step.range.start} of the disk.`;
    case 'discard-vg-free':
      return `Discard the ${formatBytes(step.freeBytes)} of free extents in volume group ${step.vg}.`;
  }
}

export async function inspectGuest(guest: GuestSession, gptUsableEndByte: (diskBytes: number) => Promise<number | undefined>): Promise<GuestLayout> {
  const device = (await listDevices(guest))[0];
  if (device === undefined) throw new Refused('The appliance sees no disk in the image; nothing to compact.');
  const table = await tableType(guest, device);
  const partitions: LayoutPartition[] = [];
  if (table !== 'unknown') {
    for (const p of await listPartitions(guest, device)) {
      const extended = table === 'msdos' && p.number <= 4 && (await mbrAttributes(guest, device, p.number)).kind === 'extended';
      partitions.push({ number: p.number, startByte: p.startByte, endByte: p.endByte + 1, extended });
    }
  }
  const vgs = (await volumeGroups(guest)).filter((vg) => !/^\s*$/.test(vg.name));
  const diskBytes = await deviceSizeBytes(guest, device);
  // Without a readable GPT header the end of the disk is left alone (usable end 0: no gap there is discarded).
  const usableEndByte = table === 'gpt' ? ((await gptUsableEndByte(diskBytes)) ?? 0) : diskBytes;
  return { device, diskBytes, usableEndByte, table, partitions, filesystems: await listFilesystems(guest), volumeGroups: vgs };
}

function partitionOf(layout: GuestLayout, fsDevice: string): LayoutPartition | undefined {
  const match = /^(\/dev\/[a-z]+)(\d+)$/.exec(fsDevice);
  if (!match || match[1] !== layout.device) return undefined;
  return layout.partitions.find((p) => p.number === Number(match[2]));
}

/**
 * Space outside every partition (the extended container counts as a partition: its gaps hold the EBRs),
 * from the start of the first partition (before it live the boot code and the primary GPT) to the end of
 * the usable end (GPT keeps its backup entries and header after it). Only whole clusters: a discard releases
 * nothing smaller.
 */
export function gapRanges(layout: GuestLayout, clusterBytes: number): Range[] {
  if (layout.table === 'unknown' || layout.partitions.length === 0) return [];
  const first = Math.min(...layout.partitions.map((p) => p.startByte));
  const stop = Math.min(layout.usableEndByte, layout.diskBytes);
  if (stop <= first) return [];
  const used = layout.partitions.map((p) => ({ start: p.startByte, length: p.endByte - p.startByte }));
  return subtract({ start: first, length: stop - first }, used).flatMap((r) => alignInward(r, clusterBytes) ?? []);
}

/** The trims and discards that release the free space of this layout (pure; the same for every format). */
export function planTrims(layout: GuestLayout, clusterBytes: number): { steps: TrimStep[]; skipped: string[] } {
  const steps: TrimStep[] = [];
  const skipped: string[] = [];
  for (const [device, fsType] of Object.entries(layout.filesystems).sort(([a], [b]) => a.localeCompare(b))) {
    if (TRIMMABLE.has(fsType)) {
      steps.push({ kind: 'trim-filesystem', device, fsType });
    } else if (fsType === 'swap') {
      const whole = device === layout.device && layout.table === 'unknown';
      const partition = partitionOf(layout, device);
      const span = whole ? { start: 0, length: layout.diskBytes } : partition && { start: partition.startByte, length: partition.endByte - partition.startByte };
      const range = span && alignInward({ start: span.start + SWAP_HEADER_BYTES, length: span.length - SWAP_HEADER_BYTES }, clusterBytes);
      if (range) steps.push({ kind: 'discard-swap', device, range });
      else if (!span) skipped.push(`the swap space on ${device} (inside LVM) is left as it is`);
    } else if (fsType !== 'unknown' && fsType !== '') {
      skipped.push(`the ${fsType} filesystem on ${device} cannot be trimmed and is left as it is`);
    }
  }
  for (const vg of layout.volumeGroups) {
    if (vg.freeBytes >= clusterBytes) steps.push({ kind: 'discard-vg-free', vg: vg.name, freeBytes: vg.freeBytes });
  }
  for (const range of gapRanges(layout, clusterBytes)) steps.push({ kind: 'discard-gap', range });
  return { steps, skipped };
}

/**
 * Refuses, before anything changes, a filesystem whose free-space map cannot be trusted: trimming what
 * a damaged bitmap calls free would destroy data.
 */
export async function checkTrimmable(guest: GuestSession, steps: readonly TrimStep[]): Promise<void> {
  for (const step of steps) {
    if (step.kind !== 'trim-filesystem') continue;
    if (step.fsType.startsWith('ext')) {
      const state = await extState(guest, step.device);
      if (/error/i.test(state) || (step.fsType === 'ext2' && state !== 'clean')) {
        throw new Refused(
          `The ${step.fsType} filesystem on ${step.device} is marked "${state}"; run fsck on it in the guest (e2fsck -f), then compact again. Nothing was changed.`,
        );
      }
    } else if (step.fsType === 'ntfs' && !(await ntfsWritable(guest, step.device))) {
      throw new Refused(
        `The NTFS filesystem on ${step.device} is marked dirty or hibernated; boot Windows, run CHKDSK /F and shut down fully (no fast startup), then compact again. Nothing was changed.`,
      );
    }
  }
}

/** Runs the steps that need the appliance; the discards of byte ranges are done on the host afterwards. */
export async function runGuestTrims(guest: GuestSession, steps: readonly TrimStep[], onStep: (done: number) => void = () => undefined): Promise<void> {
  let done = 0;
  for (const step of steps) {
    if (step.kind === 'trim-filesystem') {
      await mount(guest, step.device, '/');
      try {
        await fstrim(guest, '/');
      } finally {
        await unmountAll(guest);
      }
    } else if (step.kind === 'discard-vg-free') {
      await discardVgFree(guest, step.vg);
    }
    onStep(++done);
  }
}

/** Covers the VG's free extents with a temporary LV, discards it and removes it (as virt-sparsify does). */
async function discardVgFree(guest: GuestSession, vg: string): Promise<void> {
  const path = `/dev/${vg}/${FREE_SPACE_LV}`;
  // A leftover from an interrupted run holds only discarded space.
  if ((await logicalVolumes(guest)).some((lv) => lv.path === path)) await lvremove(guest, path);
  await lvcreateFree(guest, FREE_SPACE_LV, vg, 100);
  try {
    await blkdiscard(guest, path);
  } finally {
    await lvremove(guest, path);
  }
}

/** The byte ranges of the disk that the host discards (swap after its header, gaps). */
export function hostDiscards(steps: readonly TrimStep[]): Range[] {
  return steps.flatMap((s) => (s.kind === 'discard-swap' || s.kind === 'discard-gap' ? [s.range] : []));
}
