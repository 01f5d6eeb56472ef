// The factory's public types: what to build, what was built, what the verifier found.
import type { SfdiskTable } from './table.js';

export type ImageFormat = 'qcow2' | 'ploop';
/** logical: MBR with an extended partition whose last logical partition is the last partition on the disk. */
export type TableKind = 'gpt' | 'mbr' | 'logical' | 'none';
/** lvm: a PV as the last partition; its VG holds a small LV then the last LV, which carries ext4 and the files. */
export type ContentKind = 'ext2' | 'ext3' | 'ext4' | 'ntfs' | 'btrfs' | 'xfs' | 'swap' | 'lvm';

export interface ImageSpec {
  format: ImageFormat;
  table: TableKind;
  content: ContentKind;
  /** Folder to create the image in (created if missing). */
  dir: string;
  /** Image file name (qcow2) or folder name (ploop); default derived from format, table, content and seed. */
  name?: string;
  /** Virtual size, default 1024. xfs needs a last partition of at least 300 MiB, btrfs 114 MiB. */
  sizeMiB?: number;
  /** Data kept in files, default 64. */
  filesMiB?: number;
  /** Data written, synced, then deleted (stale blocks for compact), default 64. */
  deletedMiB?: number;
  /** Plain image: qcow2 preallocation=falloc with every cluster allocated; ploop with every BAT entry allocated. */
  preallocated?: boolean;
  /** Seeds file contents, GUIDs and the VG name; default 1. */
  seed?: number;
}

export interface PartitionInfo {
  number: number;
  startSector: number;
  sizeSectors: number;
  /** GPT type GUID or MBR type byte in hex, as sfdisk prints it. */
  typeId: string;
  uuid?: string;
  name?: string;
  attrs?: string;
  bootable?: boolean;
}

export interface BuiltImage {
  spec: ImageSpec;
  format: ImageFormat;
  table: TableKind;
  content: ContentKind;
  /** What to pass to --hdd: the qcow2 file, or the ploop folder. */
  hdd: string;
  /** The qcow2 file, or the ploop delta (root.hds). */
  dataFile: string;
  /** Path inside the filesystem -> sha256, for every regular file kept. */
  checksums: Record<string, string>;
  swapUuid?: string;
  swapLabel?: string;
  /** lvm: the VG and the LV carrying the files (the last LV). */
  vgName?: string;
  lvName?: string;
  /** Partitions as sfdisk -J reported them after creation (extended container included); empty for 'none'. */
  partitions: PartitionInfo[];
  /** sha256 of the whole byte range of every partition other than the last (and other than an extended container). */
  otherPartitionSums: Record<number, string>;
  /** Milliseconds the build took. */
  buildMs: number;
}

/** What the verifier needs to know about an image; a BuiltImage qualifies. */
export interface VerifyTarget {
  hdd: string;
  format: ImageFormat;
  content: ContentKind;
  table: TableKind;
}

export interface VerifyOptions {
  /** Expected files; default: the BuiltImage's checksums when a BuiltImage is verified; `null` skips the check. */
  checksums?: Record<string, string> | null;
  /** Files not in `checksums` are an error unless this is true. */
  allowExtraFiles?: boolean;
  /** Expected swap UUID and label; default from a BuiltImage. */
  swapUuid?: string;
  swapLabel?: string;
  /** Expected sums of the partitions other than the last; default from a BuiltImage; `null` skips. */
  otherPartitionSums?: Record<number, string> | null;
}

export interface ImageCheck {
  /** qemu-img check --output=json of the qcow2 file or the ploop delta. */
  allocatedClusters: number;
  totalClusters: number;
  /** Bytes the image file occupies on the host (st_blocks * 512). */
  hostBytes: number;
  virtualSizeBytes: number;
}

export interface PloopFacts {
  /** Disk_size from DiskDescriptor.xml, in sectors. */
  diskSizeSectors: number;
  blocksizeSectors: number;
  imageType: string;
  preallocated: boolean;
  deltaFile: string;
  /** Cluster size from the delta header ("tracks"), in sectors. */
  headerClusterSectors: number;
}

export interface VerifyReport {
  imageCheck: 'clean';
  image: ImageCheck;
  ploop?: PloopFacts;
  table: SfdiskTable | null;
  sgdiskVerify?: string;
  /** The partition (or whole disk, for 'none') holding the content. */
  lastPartition?: { number: number; startSector: number; sizeSectors: number };
  fsck: 'clean' | 'n/a';
  /** What the filesystem's own checker printed (ntfsfix -n: its stdout, with the alternate boot sector line). */
  fsckOutput?: string;
  /** Size the filesystem (or swap area) spans; for lvm, the LV's filesystem. */
  fsSizeBytes?: number;
  /** Size of the partition (or whole disk) holding the content. */
  partitionSizeBytes?: number;
  /** lvm: the PV size LVM records, and the size of the last LV. */
  pvSizeBytes?: number;
  lvSizeBytes?: number;
  swapUuid?: string;
  swapLabel?: string;
  files: Record<string, string>;
}
