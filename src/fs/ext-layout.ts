// ext2/3/4 superblock and group descriptors, decoded natively for the minimum-size computation (ext-minimum.ts).
// Field offsets: the kernel's Documentation/filesystems/ext4/super.rst and group_descr.rst. The acceptance rules
// are the ones e2fsprogs 1.47's ext2fs_open2() applies before resize2fs -P computes anything (openfs.c), plus
// ours: every block read lies inside the filesystem and the filesystem inside its container. Where a rule fails
// the answer is "uncertain" and the appliance measures instead; nothing here throws on guest bytes.
import type { ContainerReader } from './types.js';

export interface ExtLayout {
  blockBytes: number;
  blocksCount: number;
  firstDataBlock: number;
  blocksPerGroup: number;
  inodesCount: number;
  freeInodesCount: number;
  inodesPerGroup: number;
  inodeBlocksPerGroup: number;
  groupCount: number;
  descBlocks: number;
  descPerBlock: number;
  reservedGdtBlocks: number;
  firstMetaBg: number;
  logGroupsPerFlex: number;
  backupBgs: [number, number];
  clusterRatio: number;
  metaBg: boolean;
  flexBg: boolean;
  extents: boolean;
  sparseSuper: boolean;
  sparseSuper2: boolean;
  /** Per group: the free-block count of its descriptor (clusters under bigalloc, as the descriptor holds it). */
  freeBlocks: number[];
  /** Per group: the first block of its inode table. */
  inodeTable: number[];
}

export type Decoded = { layout: ExtLayout } | { uncertain: string };

const COMPAT_SPARSE_SUPER2 = 0x200;
/** EXT2_LIB_FEATURE_COMPAT_SUPP of e2fsprogs 1.47.0: resize2fs refuses other compat features. */
const COMPAT_SUPPORTED = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x200 | 0x400 | 0x800 | 0x1000;
export const COMPAT_HAS_JOURNAL = 0x4;
export const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
export const INCOMPAT_EXTENTS = 0x40;
export const INCOMPAT_64BIT = 0x80;
export const INCOMPAT_FLEX_BG = 0x200;
/** EXT2_LIB_FEATURE_INCOMPAT_SUPP of 1.47.0 (with MMP, as Debian builds it), less the journal device. */
const INCOMPAT_SUPPORTED = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000;
const RO_COMPAT_SPARSE_SUPER = 0x1;
const RO_COMPAT_BIGALLOC = 0x200;
const RO_COMPAT_METADATA_CSUM = 0x400;
export const STATE_ERRORS = 0x2;
export const SUPERBLOCK_OFFSET = 1024;
export const EXT_MAGIC = 0xef53;
/** 16 TiB of 4 KiB blocks with 64-byte descriptors needs 32 MiB: more is hostile, and the appliance decides. */
const MAX_DESCRIPTOR_BYTES = 64 * 1024 * 1024;

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** e2fsprogs' ext2fs_crc32c_le(~0, ...): CRC-32C without the final inversion, as s_checksum stores it. */
export function crc32cLe(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}

/** ext2fs_bg_has_super(): which groups hold a superblock backup. */
export function groupHasSuper(layout: Pick<ExtLayout, 'sparseSuper' | 'sparseSuper2' | 'backupBgs'>, group: number): boolean {
  if (group === 0) return true;
  if (layout.sparseSuper2) return group === layout.backupBgs[0] || group === layout.backupBgs[1];
  if (group <= 1 || !layout.sparseSuper) return true;
  if (group % 2 === 0) return false;
  const powerOf = (base: number): boolean => {
    let a = group;
    while (a > base && a % base === 0) a /= base;
    return a === base;
  };
  return powerOf(3) || powerOf(5) || powerOf(7);
}

function superblockFindings(sb: Buffer): string | undefined {
  if (sb.readUInt16LE(0x38) !== EXT_MAGIC) return 'no ext superblock';
  const compat = sb.readUInt32LE(0x5c);
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);
  if (roCompat & RO_COMPAT_METADATA_CSUM) {
    if (sb[0x175] !== 1) return 'the superblock names an unknown checksum type';
    if (crc32cLe(sb.subarray(0, 0x3fc)) !== sb.readUInt32LE(0x3fc)) return 'the superblock checksum does not match';
  }
  if (sb.readUInt32LE(0x4c) > 1) return 'the superblock revision is newer than e2fsprogs 1.47 knows';
  if (incompat & ~INCOMPAT_SUPPORTED) return `unknown incompatible features (0x${(incompat & ~INCOMPAT_SUPPORTED).toString(16)})`;
  if (incompat & INCOMPAT_JOURNAL_DEV) return 'it is an external journal device';
  if (compat & ~COMPAT_SUPPORTED) return `compatible features resize2fs refuses (0x${(compat & ~COMPAT_SUPPORTED).toString(16)})`;
  if (incompat & INCOMPAT_RECOVER) return 'the journal needs recovery';
  if (sb.readUInt16LE(0x3a) & STATE_ERRORS) return 'the filesystem has recorded errors';
  return undefined;
}

/** Decodes and judges the superblock and the descriptors; reads only inside the filesystem and the container. */
export async function readExtLayout(container: ContainerReader): Promise<Decoded> {
  if (container.sizeBytes < SUPERBLOCK_OFFSET + 1024) return { uncertain: 'the container is smaller than a superblock' };
  const sb = await container.read(SUPERBLOCK_OFFSET, 1024);
  const finding = superblockFindings(sb);
  if (finding) return { uncertain: finding };
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);
  const logBlock = sb.readUInt32LE(0x18);
  const logCluster = sb.readUInt32LE(0x1c);
  const logFlex = sb[0x174]!;
  const bigalloc = (roCompat & RO_COMPAT_BIGALLOC) !== 0;
  if (logBlock > 6 || logCluster > 19 || logBlock > logCluster || logFlex > 31) return { uncertain: 'the superblock has impossible sizes' };
  if (!bigalloc && logBlock !== logCluster) return { uncertain: 'the cluster size differs from the block size without bigalloc' };
  const blockBytes = 1024 * 2 ** logBlock;
  const inodeBytes = sb.readUInt32LE(0x4c) === 0 ? 128 : sb.readUInt16LE(0x58);
  if (inodeBytes < 128 || inodeBytes > blockBytes || (inodeBytes & (inodeBytes - 1)) !== 0) return { uncertain: 'the inode size is impossible' };
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const descBytes = is64 ? sb.readUInt16LE(0xfe) : 32;
  if (is64 && (descBytes < 64 || descBytes > 1024 || (descBytes & (descBytes - 1)) !== 0)) return { uncertain: 'the descriptor size is impossible' };
  const clusterRatio = 2 ** (logCluster - logBlock);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  if (blocksPerGroup !== sb.readUInt32LE(0x24) * clusterRatio) return { uncertain: 'blocks and clusters per group disagree' };
  const inodesPerGroup = sb.readUInt32LE(0x28);
  if (inodesPerGroup === 0) return { uncertain: 'there are no inodes per group' };
  const inodeBlocksPerGroup = Math.ceil((inodesPerGroup * inodeBytes) / blockBytes);
  const blocksCount = (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0) + sb.readUInt32LE(0x4);
  const firstDataBlock = sb.readUInt32LE(0x14);
  const descPerBlock = blockBytes / descBytes;
  if (blocksPerGroup < 8 || blocksPerGroup > (65536 - 8) * clusterRatio || inodeBlocksPerGroup > 65536 - blockBytes / inodeBytes || firstDataBlock >= blocksCount) {
    return { uncertain: 'the superblock has impossible group sizes' };
  }
  // Ours: the filesystem lies inside its container, which bounds every count below by the container's size.
  if (blocksCount * blockBytes > container.sizeBytes) return { uncertain: 'the filesystem is larger than its container' };
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  const inodesCount = sb.readUInt32LE(0x0);
  if (groupCount * inodesPerGroup !== inodesCount) return { uncertain: 'the inode count disagrees with the group count' };
  const freeInodesCount = sb.readUInt32LE(0x10);
  if (freeInodesCount >= inodesCount) return { uncertain: 'the free inode count is impossible' };
  const descBlocks = Math.ceil(groupCount / descPerBlock);
  if (descBlocks * blockBytes > MAX_DESCRIPTOR_BYTES) return { uncertain: 'the group descriptors would exceed 64 MiB' };
  const metaBg = (incompat & INCOMPAT_META_BG) !== 0;
  const firstMetaBg = sb.readUInt32LE(0x104);
  if (metaBg && firstMetaBg > descBlocks) return { uncertain: 'the first meta block group lies past the descriptors' };
  const layout: ExtLayout = {
    blockBytes, blocksCount, firstDataBlock, blocksPerGroup, inodesCount, freeInodesCount, inodesPerGroup, inodeBlocksPerGroup,
    groupCount, descBlocks, descPerBlock, clusterRatio, metaBg, logGroupsPerFlex: logFlex, firstMetaBg,
    reservedGdtBlocks: sb.readUInt16LE(0xce),
    backupBgs: [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)],
    flexBg: (incompat & INCOMPAT_FLEX_BG) !== 0,
    extents: (incompat & INCOMPAT_EXTENTS) !== 0,
    sparseSuper: (roCompat & RO_COMPAT_SPARSE_SUPER) !== 0,
    sparseSuper2: (sb.readUInt32LE(0x5c) & COMPAT_SPARSE_SUPER2) !== 0,
    freeBlocks: [],
    inodeTable: [],
  };
  const descriptors = await readDescriptorBlocks(container, layout);
  if ('uncertain' in descriptors) return descriptors;
  const wide = is64 && descBytes >= 64;
  for (let group = 0; group < groupCount; group++) {
    const block = descriptors.blocks[Math.floor(group / descPerBlock)]!;
    const at = (group % descPerBlock) * descBytes;
    layout.freeBlocks.push(block.readUInt16LE(at + 0xc) + (wide ? block.readUInt16LE(at + 0x2c) * 65536 : 0));
    layout.inodeTable.push(block.readUInt32LE(at + 0x8) + (wide ? block.readUInt32LE(at + 0x28) * 2 ** 32 : 0));
  }
  return { layout };
}

/** Where ext2fs_open2() reads each descriptor block from (the primary copies; openfs.c, descriptor_block_loc2). */
function descriptorBlockNumbers(layout: ExtLayout): number[] {
  const { firstDataBlock, blockBytes, descBlocks, metaBg, descPerBlock, blocksPerGroup, clusterRatio } = layout;
  const zeroAdjust = firstDataBlock === 0 && blockBytes === 1024 ? 1 : 0;
  const oldStyle = metaBg ? Math.min(layout.firstMetaBg, descBlocks) : descBlocks;
  const numbers: number[] = [];
  for (let i = 0; i < oldStyle; i++) numbers.push(firstDataBlock + zeroAdjust + 1 + i);
  for (let i = oldStyle; i < descBlocks; i++) {
    const group = descPerBlock * i;
    const adjust = i === 0 && blockBytes === 1024 && clusterRatio > 1 ? 1 : 0;
    numbers.push(firstDataBlock + group * blocksPerGroup + (groupHasSuper(layout, group) ? 1 : 0) + adjust);
  }
  return numbers;
}

async function readDescriptorBlocks(container: ContainerReader, layout: ExtLayout): Promise<{ blocks: Buffer[] } | { uncertain: string }> {
  const numbers = descriptorBlockNumbers(layout);
  if (numbers.some((n) => n >= layout.blocksCount)) return { uncertain: 'a group descriptor block lies past the filesystem' };
  const blocks: Buffer[] = [];
  // Runs of consecutive blocks in one read each (all of them without meta_bg).
  for (let i = 0; i < numbers.length; ) {
    let j = i + 1;
    while (j < numbers.length && numbers[j] === numbers[j - 1]! + 1) j++;
    const bytes = await container.read(numbers[i]! * layout.blockBytes, (j - i) * layout.blockBytes);
    for (let k = 0; k < j - i; k++) blocks.push(bytes.subarray(k * layout.blockBytes, (k + 1) * layout.blockBytes));
    i = j;
  }
  return { blocks };
}
