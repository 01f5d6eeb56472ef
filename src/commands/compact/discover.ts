// Finding the free space of a disk without writing to it: trim inside a throwaway qcow2 overlay backed by
// the image, then read back which clusters of the overlay the trims turned into zero clusters.
import { GuestSession, type Drive } from '../../guest/session.js';
import { map, type QemuFormat } from '../../formats/qcow2/qemu-img.js';
import type { Context } from '../context.js';
import { createOverlay } from './host.js';
import { discardGuestRanges } from '../../formats/qcow2/qemu-io.js';
import { normalize, type Range } from '../../util/ranges.js';
import { imageSource } from '../../partitions/io.js';
import { readTable } from '../../partitions/table.js';
import { SECTOR_BYTES } from '../../util/units.js';
import { checkTrimmable, hostDiscards, inspectGuest, planTrims, runGuestTrims, type GuestLayout, type TrimStep } from './trim.js';

export interface TrimSession {
  layout: GuestLayout;
  steps: TrimStep[];
  /** Sentences about what is left alone (swap inside LVM, filesystems that cannot be trimmed). */
  skipped: string[];
}

/** The GPT's own usable end, read natively (the appliance shares the file read-only meanwhile). */
async function gptUsableEnd(drive: Drive, diskBytes: number): Promise<number | undefined> {
  try {
    const table = await readTable(imageSource({ path: drive.path, format: drive.format as QemuFormat }, diskBytes));
    return table.kind === 'gpt' ? (table.primary.lastUsableLba + 1) * SECTOR_BYTES : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One appliance over `drive`: inspect, plan, refuse unsafe filesystems, trim; then the host discards the
 * byte ranges (swap, gaps) on the same file once the appliance has let go of it.
 */
export async function trimDisk(drive: Drive, clusterBytes: number, context: Context): Promise<TrimSession> {
  context.progress.step('Starting the appliance');
  const guest = await GuestSession.launch([{ ...drive, discard: true, readonly: false }], { onNotice: context.notice });
  context.progress.done();
  let session: TrimSession;
  try {
    const layout = await inspectGuest(guest, (diskBytes) => gptUsableEnd(drive, diskBytes));
    const { steps, skipped } = planTrims(layout, clusterBytes);
    await checkTrimmable(guest, steps);
    context.progress.step('Trimming the free space of the filesystems');
    await runGuestTrims(guest, steps, (done) => context.progress.update(done / Math.max(1, steps.length)));
    context.progress.done();
    session = { layout, steps, skipped };
  } finally {
    await guest.close();
  }
  await discardGuestRanges(drive.path, drive.format, hostDiscards(session.steps));
  return session;
}

export interface Discovery extends TrimSession {
  /** Virtual byte ranges of the disk that hold nothing any filesystem uses (whole overlay clusters). */
  freeRanges: Range[];
}

/** The overlay's clusters that trims turned into zero clusters: exactly what a discard would release. */
export function discardedRanges(extents: readonly { start: number; length: number; depth: number; zero: boolean; data: boolean }[]): Range[] {
  return normalize(extents.filter((e) => e.depth === 0 && e.zero && !e.data).map((e) => ({ start: e.start, length: e.length })));
}

/** Runs the trims in an overlay of `backing` (placed beside the file `beside`); the image itself is only read. */
export async function discoverFreeSpace(backing: string, format: QemuFormat, clusterBytes: number, context: Context, beside = backing): Promise<Discovery> {
  const overlay = await createOverlay(backing, format, clusterBytes, beside);
  try {
    const session = await trimDisk({ path: overlay.path, format: 'qcow2', readonly: false }, clusterBytes, context);
    return { ...session, freeRanges: discardedRanges(await map(overlay.path, 'qcow2', false)) };
  } finally {
    overlay.remove();
  }
}

/** What compact --info reports, measured the same way for qcow2 and ploop. */
export interface BlockEstimate {
  clusterBytes: number;
  totalBlocks: number;
  allocatedBlocks: number;
  usedBlocks: number;
  reclaimableBytes: number;
  heldByLowerLayersBytes: number;
  session: TrimSession;
  warnings: string[];
}
