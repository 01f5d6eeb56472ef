// resize --resize_partition matrix, no partition table on qcow2 and ploop: the filesystem is the whole disk; every
// filesystem grows, then shrinks to the re-measured Minimum (xfs: the shrink is refused). ext2 stands for ext on
// qcow2 here and ext4 on ploop (one resize2fs code path), which keeps the appliance time down.
import { describe } from 'vitest';
import { type Cell, matrix } from './resize-matrix.js';

const cells: Cell[] = [
  ...(['ntfs', 'ext2', 'btrfs', 'xfs', 'swap'] as const).map((content) => ({ format: 'qcow2', table: 'none', content }) as const),
  ...(['ntfs', 'ext4', 'btrfs', 'xfs', 'swap'] as const).map((content) => ({ format: 'ploop', table: 'none', content }) as const),
];

describe('resize matrix: no table', () => matrix('none', cells, 1840));
