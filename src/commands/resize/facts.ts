// What resize and resize --info know before deciding anything: the image, its partition table, the last
// partition and what it holds; all read natively (qemu-io), without the appliance.
import type { Image } from '../../formats/image.js';
import { ImageInvalid, Refused } from '../../util/errors.js';
import { CommandFailed } from '../../util/exec.js';
import { check, freeLeaks } from '../../formats/qcow2/qemu-img.js';
import { guestReaderOf, recoverPloopImage, requireChainStillNamed } from '../../formats/ploop/image.js';
import { SECTOR_BYTES } from '../../util/units.js';
import { type ByteSource, type DiskFile, imageSource } from '../../partitions/io.js';
import { type Partition, type PartitionTable, lastPartition, readTable, validateLayout } from '../../partitions/table.js';
import { type Identified, PROBE_BYTES, identify } from '../../fs/registry.js';
import { readAllocation as readQcow2Allocation } from '../../formats/qcow2/allocation.js';
import { allocatedRanges } from '../../formats/ploop/allocation.js';
import type { Range } from '../../util/ranges.js';

export interface DiskFacts {
  image: Image;
  disk: DiskFile;
  source: ByteSource;
  sizeBytes: number;
  table: PartitionTable;
  /** The partition that ends last; undefined without a table (or with an empty one). */
  last?: Partition;
  /** Where the content lives: the last partition, or the whole disk without a table. */
  containerStartBytes: number;
  containerBytes: number;
  /** The appliance's device for the container: /dev/sda2, or /dev/sda. */
  guestDevice: string;
  /** The container's first bytes, for native probes and swap re-making. */
  head: Buffer;
  content?: Identified;
  /** A preallocated ("plain") image: new space is allocated too. */
  plain: boolean;
  /** Guest byte ranges that may hold data: qemu-img map of the whole qcow2 chain, or every ploop delta's BAT. */
  allocated: Range[];
}

/**
 * Checks the container before anything reads guest data from it: qemu-img check for qcow2 (shared for queries),
 * the ploop engine's validation for ploop; a modifying run also completes what an interrupted one left (qcow2's
 * leaked clusters, ploop's in-use mark, a descriptor that disagrees with the delta).
 */
export async function assertConsistent(image: Image, mode: 'query' | 'modify', notice: (message: string) => void): Promise<void> {
  if (image.format === 'qcow2') {
    let result;
    try {
      result = await check(image.path, 'qcow2', mode === 'query');
    } catch (error) {
      if (error instanceof CommandFailed) throw new ImageInvalid(`qemu-img cannot check "${image.path}" (${error.stderr.trim().split('\n').pop() ?? 'unreadable'})`);
      throw error;
    }
    if (result.corruptions > 0 || result.checkErrors > 0) {
      throw new ImageInvalid(`qemu-img check finds ${result.corruptions} corruption(s) in "${image.path}"; repair it (qemu-img check -r all) first`);
    }
    if (mode === 'modify' && result.leaks > 0) {
      notice(`Freeing ${result.leaks} leaked cluster(s) that an interrupted write left in "${image.path}" first.`);
      await freeLeaks(image.path);
    }
    return;
  }
  const ploop = image.handle;
  if (mode === 'modify' && ploop.pendingRecovery.length > 0) {
    notice(`Completing an interrupted operation on the ploop image first: ${ploop.pendingRecovery.join('; ')}.`);
    recoverPloopImage(ploop);
  }
}

/** The guest disk for reads, writes and tools; a ploop image is read through the session's open deltas. */
export function diskFile(image: Image): DiskFile {
  if (image.format === 'qcow2') return { path: image.path, format: 'qcow2' };
  const handle = image.handle;
  return { path: image.deltas[0]!, format: 'parallels', reader: guestReaderOf(handle), verify: (tool) => requireChainStillNamed(handle, tool) };
}

/**
 * What the image allocates, and whether it is plain: a qcow2 whose map shows qemu-img's preallocation (not merely
 * every cluster written: see isPreallocatedLayout), a ploop whose descriptor says Preallocated.
 */
export async function readAllocation(image: Image): Promise<{ allocated: Range[]; plain: boolean }> {
  if (image.format === 'qcow2') {
    const { data, preallocated } = await readQcow2Allocation(image.path, image.virtualSizeBytes);
    return { allocated: data, plain: preallocated && image.chain.length === 1 };
  }
  return { allocated: allocatedRanges(image.handle), plain: image.descriptor.preallocated === true };
}

/** qcow2 internal snapshots, or ploop snapshot deltas below the top one. */
function snapshotCount(image: Image): number {
  return image.format === 'qcow2' ? image.snapshots.length : image.deltas.length - 1;
}

/** A resize changes the current state only, which the snapshots would no longer match: they are merged first. */
export function refuseSnapshots(image: Image): void {
  if (image.format === 'qcow2' && image.snapshots.length > 0) {
    throw new Refused(
      `The image has ${image.snapshots.length} internal snapshot(s), which qemu-img cannot resize around; merge them first (prl_disk_tool merge --hdd ...), then resize.`,
    );
  }
  if (image.format === 'ploop' && image.deltas.length > 1) {
    throw new Refused(`The ploop image has ${image.deltas.length - 1} snapshot delta(s); merge them first, then resize.`);
  }
}

/**
 * resize --info's notice for an image with snapshots: its numbers are the current state's (what the guest sees
 * now). No colon and neither of the dispatcher's "not supported" phrases: its parser reads every line up to the
 * first empty one (test/e2e/dispatcher.test.ts), and the disk stays "resize supported".
 */
export function snapshotNotice(image: Image): string | undefined {
  const count = snapshotCount(image);
  if (count === 0) return undefined;
  const what = image.format === 'qcow2' ? `${count} internal snapshot(s)` : `${count} snapshot delta(s)`;
  return `The image has ${what}; these sizes are those of its current state, and a shrink needs the snapshots merged first (prl_disk_tool merge).`;
}

/** Reads the current state: qcow2's active tables, or a ploop chain through every delta (native-read.ts). */
export async function readDiskFacts(image: Image): Promise<DiskFacts> {
  const disk = diskFile(image);
  const source = imageSource(disk, image.virtualSizeBytes);
  const table = await readTable(source);
  const findings = validateLayout(table);
  if (findings.length > 0) throw new ImageInvalid('The partition table is inconsistent (repair it first)', findings);
  const last = lastPartition(table);
  const containerStartBytes = last ? last.startSector * SECTOR_BYTES : 0;
  const containerBytes = last ? (last.endSector - last.startSector + 1) * SECTOR_BYTES : image.virtualSizeBytes;
  const head = table.kind === 'none' || last ? await source.read(containerStartBytes, PROBE_BYTES) : Buffer.alloc(0);
  const { allocated, plain } = await readAllocation(image);
  const facts: DiskFacts = {
    image,
    disk,
    source,
    sizeBytes: image.virtualSizeBytes,
    table,
    containerStartBytes,
    containerBytes,
    guestDevice: last ? `/dev/sda${last.number}` : '/dev/sda',
    head,
    plain,
    allocated,
  };
  if (last) facts.last = last;
  const content = head.length > 0 ? identify(head) : undefined;
  if (content) facts.content = content;
  return facts;
}
