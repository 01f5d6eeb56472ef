// resize --resize_partition matrix, MBR primary and logical on qcow2: every filesystem grows, then shrinks to the
// re-measured Minimum (xfs: the shrink is refused). ext2/3/4 share one code path (resize2fs): ext4 on MBR, ext3 on
// the logical partition, which keeps the appliance time down.
import { describe } from 'vitest';
import { type Cell, matrix } from './resize-matrix.js';

const cells: Cell[] = [
  ...(['ntfs', 'ext4', 'btrfs', 'xfs', 'swap'] as const).map((content) => ({ format: 'qcow2', table: 'mbr', content }) as const),
  ...(['ntfs', 'ext3', 'btrfs', 'xfs', 'swap'] as const).map((content) => ({ format: 'qcow2', table: 'logical', content }) as const),
];

describe('resize matrix: mbr and logical', () => matrix('mbr', cells, 1820));
