// The smallest block count resize2fs 1.47 accepts for an ext2/3/4 filesystem: what `resize2fs -P` prints, which
// is what the appliance's vfs-minimum-size answers. The steps follow calculate_minimum_resize_size() and
// calc_group_overhead() of e2fsprogs 1.47.0 (resize/resize2fs.c); the arithmetic is theirs, including its
// unsigned wrap-arounds, which are reported as "uncertain" here instead of being imitated.
import { type ExtLayout, groupHasSuper } from './ext-layout.js';

/** ext2fs_super_and_bgd_loc2(): whether a group holds a superblock, old-style or meta_bg descriptors. */
function groupOverhead(fs: ExtLayout, group: number, oldDescBlocks: number): number {
  let overhead = fs.inodeBlocksPerGroup + 2; // inode table and the two bitmaps
  const hasSuper = groupHasSuper(fs, group);
  if (group === 0 || hasSuper) overhead++;
  const metaBgSize = fs.descPerBlock;
  if (!fs.metaBg || Math.floor(group / metaBgSize) < fs.firstMetaBg) {
    if (hasSuper) overhead += oldDescBlocks;
  } else if (group % metaBgSize === 0 || group % metaBgSize === 1 || group % metaBgSize === metaBgSize - 1) {
    overhead++;
  }
  return overhead;
}

/** The minimum in blocks, or why it cannot be computed with certainty. */
export function extMinimumBlocks(fs: ExtLayout): { blocks: number } | { uncertain: string } {
  const bpg = fs.blocksPerGroup;
  const flexSize = 2 ** fs.logGroupsPerFlex;
  const inodeCount = fs.inodesCount - fs.freeInodesCount;
  let groups = Math.ceil(inodeCount / fs.inodesPerGroup);
  if (groups < 1 || groups > fs.groupCount) return { uncertain: 'the used inode count does not fit the groups' };
  const oldDescBlocks = fs.metaBg ? fs.firstMetaBg : fs.descBlocks + fs.reservedGdtBlocks;
  const overheadOf = (group: number): number => groupOverhead(fs, group, oldDescBlocks);

  // Blocks in use beyond every group's own metadata, from the descriptors' free counts.
  let dataNeeded = fs.blocksCount;
  for (let group = 0; group < fs.groupCount; group++) {
    const n = Math.min(fs.freeBlocks[group]!, bpg) + overheadOf(group);
    if (dataNeeded < n) return { blocks: fs.blocksCount };
    dataNeeded -= n;
  }

  // ext4 keeps a flex_bg's worth of inode tables as slack so that the resize can finish.
  const flexGroupsFor = (count: number): number => (fs.flexBg ? Math.min(count + flexSize - (count % flexSize), fs.groupCount) : count);
  let flexGroups = flexGroupsFor(groups);

  let dataBlocks = groups * bpg;
  let lastStart = 0;
  for (let group = 0; group < flexGroups; group++) {
    const overhead = overheadOf(group);
    if (group < groups - 1) lastStart += bpg - overhead;
    dataBlocks = dataBlocks > overhead ? dataBlocks - overhead : 0;
  }

  let blocksNeeded = dataNeeded;
  while (blocksNeeded > dataBlocks) {
    const extra = Math.ceil((blocksNeeded - dataBlocks) / bpg);
    dataBlocks += extra * bpg;
    lastStart += bpg - overheadOf(groups - 1);
    let group = flexGroups;
    groups += extra;
    if (!fs.flexBg) flexGroups = groups;
    else if (groups > flexGroups) flexGroups = flexGroupsFor(groups);
    for (; group < flexGroups; group++) {
      const overhead = overheadOf(group);
      if (group < groups - 1) lastStart += bpg - overhead;
      dataBlocks -= overhead;
    }
    // resize2fs' unsigned count would wrap here and end the loop with a meaningless size.
    if (dataBlocks < 0 || groups > fs.groupCount + 2 ** 20) return { uncertain: 'the group arithmetic wraps around' };
  }
  if (lastStart < 0) return { uncertain: 'the group arithmetic wraps around' };

  // The last group's own metadata (and, under flex_bg, that of its flex group's first groups).
  let group = groups - 1;
  if (fs.flexBg && group - (group % flexSize) === 0) group = 0;
  let overhead = 0;
  for (; group < flexGroups; group++) overhead += overheadOf(group);
  // At least 50 blocks beyond the metadata in the last group: mke2fs' and resize2fs' smallest useful group.
  overhead += Math.max(lastStart < blocksNeeded ? blocksNeeded - lastStart : 0, 50);
  overhead += fs.firstDataBlock;
  if (fs.clusterRatio > 1) overhead += fs.clusterRatio * 2;

  blocksNeeded = (groups - 1) * bpg + overhead;
  // Past the last group (groups grew in the loop above) the sum already exceeds the filesystem.
  if (groups <= fs.groupCount) blocksNeeded = Math.max(blocksNeeded, fs.inodeTable[groups - 1]! + fs.inodeBlocksPerGroup);
  if (blocksNeeded >= fs.blocksCount) return { blocks: fs.blocksCount };

  // With extents, room for the extent trees to grow: every moved block its own extent, at worst.
  if (fs.extents) {
    const extentsPerBlock = Math.floor(fs.blockBytes / 12) - 1; // struct ext3_extent is 12 bytes
    const worstCase = Math.max(Math.ceil(dataNeeded / extentsPerBlock), inodeCount);
    blocksNeeded += Math.min(Math.floor((fs.blocksCount - blocksNeeded) / 500), worstCase);
  }
  return { blocks: blocksNeeded };
}
