// The interface every filesystem (and swap, and an LVM PV) implements: identify, measure, grow, shrink.
import type { GuestSession } from '../guest/session.js';

/** What a filesystem's own superblock says, read natively from the first bytes of its container. */
export interface FsProbe {
  type: FsType;
  /** Bytes the content spans from its first byte (the filesystem's size, a swap area's size, a PV's size). */
  sizeBytes: number;
  /** Findings that make resizing unsafe until the user repairs the filesystem. */
  damaged?: string;
  /** The unit the content is sized in (ext/xfs block, btrfs sector size, NTFS cluster, swap page); 4 KiB if unknown. */
  blockBytes?: number;
}

export type FsType = 'ext2' | 'ext3' | 'ext4' | 'ntfs' | 'btrfs' | 'xfs' | 'swap' | 'lvm';

export interface Measured {
  /** Smallest size the content can be shrunk to, margin included. */
  minimumBytes: number;
  warnings: string[];
}

/** The container's bytes (the partition, or the whole disk) read natively; reads stay inside it. */
export interface ContainerReader {
  sizeBytes: number;
  read(offsetBytes: number, length: number): Promise<Buffer>;
}

/** Why a native measurement is not certain: the appliance measures instead. */
export interface Uncertain {
  uncertain: string;
}

/** Where the content lives inside the appliance. */
export interface GuestTarget {
  guest: GuestSession;
  /** /dev/sda2, or /dev/sda when there is no table. */
  device: string;
}

export interface Filesystem {
  type: FsType;
  /** The name used in messages ("an ext4 filesystem"). */
  noun: string;
  canGrow: boolean;
  /** Undefined when it can shrink; otherwise the sentence that explains why not. */
  cannotShrink?: string;
  /** Reads the superblock from the first 128 KiB of the container; undefined when it is not this filesystem. */
  probe(head: Buffer): FsProbe | undefined;
  /** Whether measuring needs the appliance (xfs and swap are measured from their superblock alone). */
  measuresInGuest: boolean;
  measure(target: GuestTarget, probe: FsProbe): Promise<Measured>;
  /**
   * The same measurement as measure(), from the container's bytes alone, where the native reading is certain to
   * give the appliance's number; otherwise Uncertain, and measure() runs in the appliance.
   */
  measureNatively?(container: ContainerReader, probe: FsProbe): Promise<Measured | Uncertain>;
  /**
   * Content resized without the appliance (swap): the writes, relative to the container's first byte, that make
   * it span `sizeBytes`. When present, grow and shrink are not used.
   */
  resizeNative?(head: Buffer, sizeBytes: number): { offsetBytes: number; bytes: Buffer }[];
  /** Grows to fill the container (already enlarged). */
  grow(target: GuestTarget): Promise<void>;
  /** Shrinks to `sizeBytes` (the container is shrunk afterwards). */
  shrink(target: GuestTarget, sizeBytes: number): Promise<void>;
  /**
   * The size to shrink to so that the content fills a container of `containerBytes` the way its format expects
   * (docs/resize.md, "Fill rule"), in one step: the shrink lands exactly, no grow is needed after the table moves.
   */
  fitBytes(containerBytes: number, probe: FsProbe): number;
}

/** Whole blocks up to the container's end: what resize2fs, btrfs and mkswap make of a container. */
export function wholeBlocks(containerBytes: number, probe: FsProbe): number {
  const block = probe.blockBytes ?? 4096;
  return Math.floor(containerBytes / block) * block;
}

/** Bytes the native probe reads from the start of a partition: btrfs' superblock ends at 68 KiB. */
export const PROBE_BYTES = 128 * 1024;
