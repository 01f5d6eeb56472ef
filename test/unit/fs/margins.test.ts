// Each content margin pinned (issue 26, class 9): resize --info's Minimum is the filesystem tool's estimate plus a
// margin, so that "resize --resize_partition to Minimum succeeds" holds (docs/resize.md lists them). A margin cut
// (tenfold, or its floor dropped) would pass every test that only shrinks roomy images.
import { describe, expect, it } from 'vitest';
import { extMargin } from '../../../src/fs/ext.js';
import { BTRFS_RESIZE_FLOOR_BYTES, btrfsMargin } from '../../../src/fs/btrfs.js';
import { NTFS_DIRTY_MARGIN_BYTES, NTFS_MARGIN_BYTES } from '../../../src/fs/ntfs.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe('content margins (docs/resize.md, "Content minimums")', () => {
  it('ext2/3/4: max(32 MiB, 3 %) of resize2fs -P', () => {
    expect(extMargin(0)).toBe(32 * MiB);
    expect(extMargin(100 * MiB)).toBe(32 * MiB);
    // 3 % passes 32 MiB above 1066.7 MiB.
    expect(extMargin(1066 * MiB)).toBe(32 * MiB);
    expect(extMargin(1100 * MiB)).toBe(Math.ceil(1100 * MiB * 0.03));
    expect(extMargin(10 * GiB)).toBe(Math.ceil(10 * GiB * 0.03));
    expect(extMargin(1000 * GiB)).toBe(30 * GiB);
  });

  it('btrfs: max(32 MiB, 2 %) of min-dev-size, never below the kernel floor of 256 MiB', () => {
    expect(btrfsMargin(0)).toBe(32 * MiB);
    expect(btrfsMargin(1600 * MiB)).toBe(32 * MiB);
    expect(btrfsMargin(10 * GiB)).toBe(Math.ceil(10 * GiB * 0.02));
    expect(BTRFS_RESIZE_FLOOR_BYTES).toBe(256 * MiB);
  });

  it('ntfs: 16 MiB above ntfsresize; a dirty volume 64 MiB above its used space', () => {
    expect(NTFS_MARGIN_BYTES).toBe(16 * MiB);
    expect(NTFS_DIRTY_MARGIN_BYTES).toBe(64 * MiB);
  });
});
