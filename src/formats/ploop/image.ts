// A ploop image: the descriptor plus its deltas opened top first; virtual offsets mapped through
// the chain to (file, offset); recovery of what an interrupted operation left behind.
import { ImageInvalid, NotSupported, Refused } from '../../util/errors.js';
import { type PloopDescriptor, readDescriptor, setDiskSize, writeDescriptor } from './descriptor.js';
import { type Delta, type DeltaLayout, clusterHostOffset, closeDelta, openDelta, recoverDelta, requireStillNamed } from './delta.js';
import { readFully } from '../../util/file-io.js';
import { clusterBytes, effectiveSizeSectors } from './header.js';
import type { GuestReader } from '../guest-reader.js';

export interface PloopImage {
  descriptor: PloopDescriptor;
  /** Top first, one per descriptor.chain entry. */
  deltas: Delta[];
  clusterBytes: number;
  /** The virtual size, as the top delta's header states it. */
  sizeBytes: number;
  /** Problems that recoverPloopImage() repairs (left by an interrupted operation). */
  pendingRecovery: string[];
}

export interface MappedExtent {
  /** Index into image.deltas of the delta that holds the data. */
  deltaIndex: number;
  file: string;
  offsetBytes: number;
}

/** What an operation does to the chain: nothing, write the top delta, or (merge) write the base and remove the rest. */
export type ChainChange = 'none' | 'top' | 'merge';

export interface OpenPloopOptions {
  /** What the operation will do; checked under --dry-run too, so that a dry run refuses as the run would. */
  change?: ChainChange;
  /** Open the deltas the change writes read-write (not under --dry-run). */
  write?: boolean;
}

/** The deltas `change` writes or removes (indices top first). */
function changedLayers(change: ChainChange, count: number): { written: Set<number>; touched: Set<number> } {
  if (change === 'none') return { written: new Set(), touched: new Set() };
  if (change === 'top') return { written: new Set([0]), touched: new Set([0]) };
  return { written: new Set([0, count - 1]), touched: new Set(Array.from({ length: count }, (_, i) => i)) };
}

/**
 * Two names of the chain for one file (the same File twice, "./root.hds" beside "root.hds", a hard link, a middle
 * layer equal to the base) would make a merge fold a file into itself and delete it; a delta that is written or
 * removed must have no other name, or the change reaches the other name's file (another container's delta).
 */
function checkIdentities(deltas: readonly Delta[], folder: string, change: ChainChange): void {
  const seen = new Map<string, Delta>();
  for (const delta of deltas) {
    const first = seen.get(delta.identity);
    if (first !== undefined) {
      throw new ImageInvalid(`The ploop image "${folder}" is invalid: its chain names one file twice ("${first.path}" and "${delta.path}" are the same file), so no layer of it can be trusted; repair DiskDescriptor.xml. Nothing was changed.`);
    }
    seen.set(delta.identity, delta);
  }
  const { touched } = changedLayers(change, deltas.length);
  for (const index of touched) {
    const delta = deltas[index]!;
    if (delta.links > 1) {
      throw new Refused(
        `The delta "${delta.path}" has ${delta.links} names (hard links); changing it would change the other names' file too. Make it a file of its own (copy it with cp --sparse=always) and try again. Nothing was changed.`,
      );
    }
  }
}

/** Opens every delta of the chain once (read-write only the ones the change writes, and only when asked). */
export function openPloopImage(source: string | PloopDescriptor, options: OpenPloopOptions = {}): PloopImage {
  const descriptor = typeof source === 'string' ? readDescriptor(source) : source;
  const change = options.change ?? (options.write === true ? 'top' : 'none');
  const { written } = changedLayers(change, descriptor.chain.length);
  const deltas: Delta[] = [];
  try {
    for (const [index, link] of descriptor.chain.entries()) {
      if (link.type === 'Plain') {
        throw new NotSupported(`The ploop image "${descriptor.folder}" has a raw (Plain) base image, which this tool does not support.`);
      }
      deltas.push(openDelta(link.file, { write: options.write === true && written.has(index) }));
    }
    checkIdentities(deltas, descriptor.folder, change);
    const top = deltas[0]!;
    const cluster = clusterBytes(top.header);
    const mismatched = deltas.filter((d) => clusterBytes(d.header) !== cluster || d.header.clusterSectors !== descriptor.blockSizeSectors);
    if (mismatched.length > 0) {
      throw new ImageInvalid(`The ploop image "${descriptor.folder}" is invalid`, [
        `the delta "${mismatched[0]!.path}" has a cluster size of ${mismatched[0]!.header.clusterSectors} sectors, but the descriptor's Blocksize is ${descriptor.blockSizeSectors}`,
      ]);
    }
    const lowerInUse = deltas.slice(1).filter((d) => d.findings.some((f) => f.rule === 'in-use-set'));
    if (lowerInUse.length > 0) {
      throw new ImageInvalid(`The ploop image "${descriptor.folder}" is invalid`, [`the read-only snapshot delta "${lowerInUse[0]!.path}" is marked in use`]);
    }
    const sizeSectors = effectiveSizeSectors(top.header);
    const pendingRecovery = top.findings.map((f) => f.message);
    if (descriptor.diskSizeSectors !== sizeSectors) {
      pendingRecovery.push(`the descriptor's Disk_size of ${descriptor.diskSizeSectors} sectors differs from the top delta's ${sizeSectors}`);
    }
    return { descriptor, deltas, clusterBytes: cluster, sizeBytes: sizeSectors * 512, pendingRecovery };
  } catch (error) {
    for (const delta of deltas) closeDelta(delta);
    throw error;
  }
}

export function closePloopImage(image: PloopImage): void {
  for (const delta of image.deltas) closeDelta(delta);
}

/**
 * Completes an interrupted operation: the top delta's recovery (see delta.ts), then the descriptor
 * follows the top delta's size, which our operations always change first.
 */
export function recoverPloopImage(image: PloopImage): string[] {
  const done = recoverDelta(image.deltas[0]!);
  const sizeSectors = image.sizeBytes / 512;
  if (image.descriptor.diskSizeSectors !== sizeSectors) {
    setDiskSize(image.descriptor, sizeSectors);
    writeDescriptor(image.descriptor);
    done.push(`set the descriptor's Disk_size to ${sizeSectors} sectors`);
  }
  image.pendingRecovery = [];
  return done;
}

/** Where virtual cluster `index` lives: the first delta from the top that allocates it. */
export function mapCluster(image: PloopImage, index: number): MappedExtent | undefined {
  for (const [deltaIndex, delta] of image.deltas.entries()) {
    const offset = clusterHostOffset(delta, index);
    if (offset !== undefined) return { deltaIndex, file: delta.path, offsetBytes: offset };
  }
  return undefined;
}

/** Maps one virtual byte offset; undefined when no delta holds it (it reads as zeros). */
export function mapVirtual(image: PloopImage, offsetBytes: number): MappedExtent | undefined {
  if (offsetBytes < 0 || offsetBytes >= image.sizeBytes) throw new RangeError(`offset ${offsetBytes} is outside the disk`);
  const within = offsetBytes % image.clusterBytes;
  const mapped = mapCluster(image, Math.floor(offsetBytes / image.clusterBytes));
  return mapped && { ...mapped, offsetBytes: mapped.offsetBytes + within };
}

/** Reads virtual bytes through the chain (for tests and checks; not for bulk copying). */
export function readVirtual(image: PloopImage, offsetBytes: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const at = offsetBytes + done;
    const chunk = Math.min(length - done, image.clusterBytes - (at % image.clusterBytes), image.sizeBytes - at);
    if (chunk <= 0) break;
    const mapped = mapVirtual(image, at);
    if (mapped) readFully(image.deltas[mapped.deltaIndex]!.fd, chunk, mapped.offsetBytes).copy(out, done);
    done += chunk;
  }
  return out;
}

/**
 * Right before a tool that cannot take the open files (the appliance, qemu-img) is given the deltas' names: each
 * name must still hold the delta that was validated (see requireStillNamed).
 */
export function requireChainStillNamed(image: PloopImage, tool: string): void {
  for (const delta of image.deltas) requireStillNamed(delta, tool);
}

/** The guest's bytes as the chain shows them, read through the deltas this handle holds open. */
export function guestReaderOf(image: PloopImage): GuestReader {
  return {
    get sizeBytes() {
      return image.sizeBytes;
    },
    read: (offsetBytes, length) => readVirtual(image, offsetBytes, length),
  };
}

/** Executors refuse to start on an image that an interrupted operation left behind. */
export function requireRecovered(image: PloopImage): void {
  if (image.pendingRecovery.length > 0) {
    throw new ImageInvalid(`The ploop image "${image.descriptor.folder}" needs recovery from an interrupted operation first`, image.pendingRecovery);
  }
}

/** The planners' view of delta `index` (0 = top). */
export function layoutOf(image: PloopImage, index: number): DeltaLayout {
  const d = image.deltas[index]!;
  return { header: d.header, bat: d.bat, fileSizeBytes: d.fileSizeBytes };
}
