// resize --info: Size, Minimum (with the last partition shrunk to its content's minimum) and Minimum without
// resizing the last partition. Read-only, shared lock; the appliance starts only when a filesystem must be read.
import type { Context } from '../context.js';
import type { ResizeInfoReport } from '../report.js';
import { KernelMounted, openImage } from '../open.js';
import { mountedSizes } from '../../formats/ploop/mounted.js';
import { assertConsistent, readDiskFacts, snapshotNotice, type DiskFacts } from './facts.js';
import { guestDrive } from '../../formats/image.js';
import { GuestSession, type Drive } from '../../guest/session.js';
import { qemuDeltaChain } from '../../formats/ploop/qemu-chain.js';
import { createOverlay, type Overlay } from '../compact/host.js';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { minimumKeepingLayout, minimumResizingLast, roundUpToMiB } from '../../partitions/layout.js';
import { exactKeepBytes, type SizeLimits } from './plan.js';
import type { ContainerReader, Measured } from '../../fs/types.js';
import { NotSupported } from '../../util/errors.js';
import { debug } from '../../util/log.js';

/** The container's bytes through the disk's native reader; a read outside it is a bug of the caller. */
function containerReader(facts: DiskFacts): ContainerReader {
  return {
    sizeBytes: facts.containerBytes,
    read(offsetBytes, length) {
      if (offsetBytes < 0 || length < 0 || offsetBytes + length > facts.containerBytes) {
        throw new RangeError(`internal: a read of ${length} bytes at ${offsetBytes} lies outside the ${facts.containerBytes}-byte container`);
      }
      return facts.source.read(facts.containerStartBytes + offsetBytes, length);
    },
  };
}

// Every "cannot resize the last partition" warning starts with the original's words (StringTable.cpp,
// IDS_DISK_INFO__RESIZE_WARN_FS_NOTSUPP): the dispatcher looks for "The last partition cannot be resized " in
// resize --info's output to mark the disk "resize not supported" (Task_DiskImageResizer.cpp, Info::operator()).
const CANNOT_RESIZE = 'The last partition cannot be resized because';

/** The throwaway overlay over a ploop chain holds nothing: its cluster size only sets its table sizes. */
const OVERLAY_CLUSTER_BYTES = 64 * 1024;

export const UNSUPPORTED_WARNING = `${CANNOT_RESIZE} it holds no filesystem that prl_disk_tool can shrink; Minimum is the size without resizing the last partition.`;

/** "The LVM volume ..." stays capitalised; "The last logical volume ..." continues the sentence in lower case. */
function because(sentence: string): string {
  const continued = /^[A-Z][a-z]/.test(sentence) ? sentence[0]!.toLowerCase() + sentence.slice(1) : sentence;
  return `${CANNOT_RESIZE} ${continued}`;
}

/** Measures the content: natively when its superblock says enough, otherwise in the given or a new appliance. */
export async function measureContent(facts: DiskFacts, guest: () => Promise<GuestSession>): Promise<Measured | { unsupported: string }> {
  const content = facts.content;
  // A blank disk (no table, nothing recognisable) holds nothing to keep: 1 MiB, and no warning.
  if (!content && facts.table.kind === 'none' && facts.head.every((b) => b === 0)) return { minimumBytes: 0, warnings: [] };
  if (!content) return { unsupported: UNSUPPORTED_WARNING };
  if (content.probe.damaged) return { unsupported: because(`${content.probe.damaged}. Minimum is the size without resizing it.`) };
  if (content.fs.cannotShrink) {
    return { minimumBytes: content.probe.sizeBytes, warnings: [] };
  }
  if (content.fs.measureNatively) {
    const native = await content.fs.measureNatively(containerReader(facts), content.probe);
    if (!('uncertain' in native)) {
      debug(`measured ${content.fs.noun} natively, without the appliance`);
      return native;
    }
    debug(`measuring ${content.fs.noun} in the appliance: the native reading is not certain (${native.uncertain})`);
  }
  const session = content.fs.measuresInGuest ? await guest() : undefined;
  try {
    return await content.fs.measure({ guest: session as GuestSession, device: facts.guestDevice }, content.probe);
  } catch (error) {
    // Content we recognise but cannot resize (an LV with several segments, an unsupported filesystem in an LV).
    if (error instanceof NotSupported) return { unsupported: because(error.message) };
    throw error;
  }
}

/**
 * Both minimums follow the planner's rule (resize/minimum.ts): never below the end of data that no structure
 * proves free. Without a table and without recognised content nothing can shrink but the disk itself, so both
 * are that end; with a table, shrinking the last partition's content frees what lay in its tail.
 */
export function sizeLimits(facts: DiskFacts, measured: Measured | { unsupported: string }): SizeLimits {
  const keep = Math.max(minimumKeepingLayout(facts.table, facts.content?.probe.sizeBytes ?? 0), roundUpToMiB(exactKeepBytes(facts)));
  if ('unsupported' in measured) return { minimumBytes: keep, minimumKeepLastPartitionBytes: keep, warnings: [measured.unsupported] };
  if (facts.table.kind === 'none' && !facts.content) return { minimumBytes: keep, minimumKeepLastPartitionBytes: keep, warnings: measured.warnings };
  const minimum = Math.min(keep, minimumResizingLast(facts.table, measured.minimumBytes));
  return { minimumBytes: minimum, minimumKeepLastPartitionBytes: keep, contentMinimumBytes: measured.minimumBytes, warnings: measured.warnings };
}

/** A running container: the sizes the kernel and the mounted filesystem show (formats/ploop/mounted.ts), as the original read them. */
function mountedInfo(mounted: KernelMounted, hdd: string): ResizeInfoReport {
  const sizes = mountedSizes(mounted.devices[0]!, mounted.clusterBytes, hdd);
  return { kind: 'resize-info', sizeBytes: sizes.sizeBytes, minimumBytes: sizes.minimumBytes, minimumKeepLastPartitionBytes: sizes.minimumKeepLastPartitionBytes, warnings: [] };
}

export async function resizeInfo(hdd: string, context: Context): Promise<ResizeInfoReport> {
  let opened;
  try {
    opened = await openImage(hdd, 'query', context.notice, { online: true });
  } catch (error) {
    if (error instanceof KernelMounted) return mountedInfo(error, hdd);
    throw error;
  }
  let session: GuestSession | undefined;
  let overlay: Overlay | undefined;
  try {
    const image = opened.image;
    await assertConsistent(image, 'query', context.notice);
    const facts = await readDiskFacts(image);
    const measured = await measureContent(facts, async () => {
      context.progress.step('Starting the appliance');
      // libguestfs takes files only: a ploop chain (QEMU's nested parallels nodes) is read through a throwaway
      // qcow2 overlay in the temporary folder, which nothing writes to (the appliance opens it read-only).
      if (image.format === 'ploop' && image.deltas.length > 1) {
        overlay = await createOverlay(qemuDeltaChain(image.deltas), 'parallels', OVERLAY_CLUSTER_BYTES, join(tmpdir(), basename(image.folder)));
      }
      const drive: Drive = overlay ? { path: overlay.path, format: 'qcow2', readonly: true } : guestDrive(image, true);
      session = await GuestSession.launch([drive], { onNotice: context.notice });
      context.progress.done();
      return session;
    });
    const limits = sizeLimits(facts, measured);
    const snapshots = snapshotNotice(image);
    return {
      kind: 'resize-info',
      sizeBytes: facts.sizeBytes,
      minimumBytes: limits.minimumBytes,
      minimumKeepLastPartitionBytes: limits.minimumKeepLastPartitionBytes,
      warnings: [...limits.warnings, ...(snapshots ? [snapshots] : [])],
    };
  } finally {
    await session?.close();
    overlay?.remove();
    opened.lock.release();
  }
}
