// The test image factory and verifier for every end-to-end test (host tools only; never imports src/).
//
//   buildImage(spec: ImageSpec): Promise<BuiltImage>
//     format 'qcow2' | 'ploop'; table 'gpt' | 'mbr' | 'logical' | 'none';
//     content 'ext2' | 'ext3' | 'ext4' | 'ntfs' | 'btrfs' | 'xfs' | 'swap' | 'lvm';
//     dir (created), name?, sizeMiB = 1024, filesMiB = 64, deletedMiB = 64, preallocated = false, seed = 1.
//     Layouts (sectors of 512 bytes): partition 1 at 2048, 8 MiB, filled with seeded bytes. gpt: partition 2 from
//     18432 to the end, named "prl test data", attrs GUID:60. mbr: partition 2 from 18432 to the end, bootable.
//     logical: extended 2 from 18432 to the end holding logical 5 (8 MiB, seeded bytes) and logical 6 to the end.
//     none: the content spans the whole disk. lvm: PV on the last partition, VG "prltest<seed>x<pid>x<n>" with LV
//     "first" (8 MiB) then LV "data" (the rest, ext4 with the files). swap: mkswap with a seeded UUID, label
//     "prl-test-swap". Deleted data is written first, then the kept files, then the deleted files are removed.
//     qcow2: <dir>/<name>.qcow2 (preallocation=falloc when preallocated). ploop: <dir>/<name>/root.hds (Parallels
//     delta, 1 MiB clusters, every cluster allocated when preallocated) + DiskDescriptor.xml (Type Compressed,
//     <Preallocated>1</Preallocated> when preallocated, top GUID {5fbaabe3-6958-40ff-92a7-860e329aab41}).
//     BuiltImage: hdd (--hdd argument), dataFile, checksums (path -> sha256), partitions (as sfdisk -J said),
//     otherPartitionSums, swapUuid/swapLabel, vgName/lvName, buildMs.
//
//   verifyImage(image: BuiltImage | {hdd, format, content, table}, options?): Promise<VerifyReport>
//     qemu-img check clean; ploop descriptor consistent with the delta; raw export read by sfdisk -J (+ sgdisk -v
//     for GPT: "No problems found"); table kind as expected; other partitions' bytes unchanged; forced read-only
//     fsck of the last partition's content (lvm: vgck + the last LV's ext4); the files' sha256 equal to the
//     expected ones (extra files an error unless allowExtraFiles). Throws one Error listing every mismatch.
//     Report: image (clusters, hostBytes, virtualSizeBytes), ploop facts, table, sgdiskVerify, lastPartition,
//     fsck, fsSizeBytes vs partitionSizeBytes (lvm: also pvSizeBytes, lvSizeBytes), swapUuid/swapLabel, files.
//
//   readPartitionTable(raw) / readImagePartitionTable({hdd, format}): sfdisk -J and sgdisk -v of a raw file / an image.
//   sha256Tree(mountpoint): path -> sha256 of every regular file (root lost+found skipped).
//
// Nothing is left behind on any path: temp files live in os.tmpdir() with unique names, loop devices and mounts are
// released in finally blocks; verification never writes beside the image.
export type {
  BuiltImage,
  ContentKind,
  ImageCheck,
  ImageFormat,
  ImageSpec,
  PartitionInfo,
  PloopFacts,
  TableKind,
  VerifyOptions,
  VerifyReport,
  VerifyTarget,
} from './types.js';
export type { SfdiskPartition, SfdiskTable, TableReading } from './table.js';
export { buildImage, defaultName, SWAP_LABEL } from './build.js';
export { readImagePartitionTable, verifyImage } from './verify.js';
export { readPartitionTable, GPT_LAST_ATTRS, GPT_LAST_NAME } from './table.js';
export { sha256Tree } from './content.js';
export { tool, ToolFailed } from './run.js';
