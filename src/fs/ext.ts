// ext2/3/4: superblock at 1024 (Documentation/filesystems/ext4/super.rst), measured by resize2fs -P, resized
// offline by resize2fs after a forced e2fsck (resize2fs insists on it).
import { e2fsckForced, resize2fs, vfsMinimumSize } from '../guest/filesystems.js';
import { MiB, alignDown } from '../util/units.js';
import type { Filesystem, FsProbe, FsType } from './types.js';
import {
  COMPAT_HAS_JOURNAL, EXT_MAGIC, INCOMPAT_64BIT, INCOMPAT_EXTENTS, INCOMPAT_FLEX_BG, INCOMPAT_RECOVER, STATE_ERRORS, SUPERBLOCK_OFFSET as SB, readExtLayout,
} from './ext-layout.js';
import { extMinimumBlocks } from './ext-minimum.js';

const PAGE_BYTES = 4096;

/** resize2fs -P is an estimate; this margin makes "resize to Minimum succeeds" hold (see docs/resize.md). */
export function extMargin(minimumBytes: number): number {
  return Math.max(32 * MiB, Math.ceil(minimumBytes * 0.03));
}

export function probeExt(head: Buffer): FsProbe | undefined {
  if (head.length < SB + 1024 || head.readUInt16LE(SB + 0x38) !== EXT_MAGIC) return undefined;
  const blockBytes = 1024 * 2 ** head.readUInt32LE(SB + 0x18);
  const compat = head.readUInt32LE(SB + 0x5c);
  const incompat = head.readUInt32LE(SB + 0x60);
  const high = incompat & INCOMPAT_64BIT ? head.readUInt32LE(SB + 0x150) : 0;
  const blocks = high * 2 ** 32 + head.readUInt32LE(SB + 0x4);
  const type: FsType = incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG) ? 'ext4' : compat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
  const probe: FsProbe = { type, sizeBytes: blocks * blockBytes, blockBytes };
  const state = head.readUInt16LE(SB + 0x3a);
  if (state & STATE_ERRORS) probe.damaged = `the ${type} filesystem has recorded errors; run e2fsck -f on it first`;
  else if (incompat & INCOMPAT_RECOVER) probe.damaged = `the ${type} filesystem's journal needs recovery; start the VM once or run e2fsck on it first`;
  return probe;
}

function ext(type: 'ext2' | 'ext3' | 'ext4'): Filesystem {
  return {
    type,
    noun: `an ${type} filesystem`,
    canGrow: true,
    measuresInGuest: true,
    probe: (head) => {
      const probe = probeExt(head);
      return probe?.type === type ? probe : undefined;
    },
    async measure({ guest, device }) {
      const minimum = await vfsMinimumSize(guest, device);
      return { minimumBytes: minimum + extMargin(minimum), warnings: [] };
    },
    // resize2fs -P's number (vfs-minimum-size multiplies it by the block size), with the same margin on top.
    async measureNatively(container) {
      const decoded = await readExtLayout(container);
      if ('uncertain' in decoded) return decoded;
      const counted = extMinimumBlocks(decoded.layout);
      if ('uncertain' in counted) return counted;
      const minimum = counted.blocks * decoded.layout.blockBytes;
      return { minimumBytes: minimum + extMargin(minimum), warnings: [] };
    },
    async grow({ guest, device }) {
      await e2fsckForced(guest, device);
      await resize2fs(guest, device);
    },
    async shrink({ guest, device }, sizeBytes) {
      await e2fsckForced(guest, device);
      await resize2fs(guest, device, sizeBytes);
    },
    // Whole blocks, in whole pages: mke2fs and resize2fs (growing to the device) round 1 KiB and 2 KiB blocks down
    // to the 4 KiB page. A last group too small for its own metadata is dropped by both, and by a shrink alike,
    // so a later grow could not do better.
    fitBytes: (containerBytes, probe) => alignDown(containerBytes, Math.max(probe.blockBytes ?? PAGE_BYTES, PAGE_BYTES)),
  };
}

export const ext2 = ext('ext2');
export const ext3 = ext('ext3');
export const ext4 = ext('ext4');
