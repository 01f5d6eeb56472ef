// btrfs: superblock at 64 KiB (btrfs docs "On-disk format"), measured with min-dev-size and resized while
// mounted in the appliance (btrfs has no offline resize).
import { btrfsResize, mount, mountReadOnly, unmountAll, vfsMinimumSize } from '../guest/filesystems.js';
import { MiB } from '../util/units.js';
import { type Filesystem, type FsProbe, wholeBlocks } from './types.js';

const SB = 0x10000;
const MAGIC = '_BHRfS_M';
/** dev_item.total_bytes: the size this device gives the filesystem (dev_item at 0xc9, devid then total_bytes). */
const DEV_TOTAL_BYTES = 0xc9 + 8;
/** sectorsize: the unit the kernel rounds a resize down to. */
const SECTORSIZE = 0x90;

export function probeBtrfs(head: Buffer): FsProbe | undefined {
  if (head.length < SB + 4096 || head.toString('latin1', SB + 0x40, SB + 0x48) !== MAGIC) return undefined;
  return { type: 'btrfs', sizeBytes: Number(head.readBigUInt64LE(SB + DEV_TOTAL_BYTES)), blockBytes: head.readUInt32LE(SB + SECTORSIZE) };
}

/** min-dev-size is where btrfs' own shrink stops being possible; leave some room for chunk relocation. */
export function btrfsMargin(minimumBytes: number): number {
  return Math.max(32 * MiB, Math.ceil(minimumBytes * 0.02));
}

/** The kernel refuses to resize a btrfs device below 256 MiB (fs/btrfs/ioctl.c, btrfs_ioctl_resize: EINVAL). */
export const BTRFS_RESIZE_FLOOR_BYTES = 256 * MiB;

export const btrfs: Filesystem = {
  type: 'btrfs',
  noun: 'a btrfs filesystem',
  canGrow: true,
  measuresInGuest: true,
  probe: probeBtrfs,
  async measure({ guest, device }, probe) {
    await mountReadOnly(guest, device, '/');
    try {
      // libguestfs wants the device, and the device mounted (it runs min-dev-size on the mountpoint).
      const minimum = await vfsMinimumSize(guest, device);
      return { minimumBytes: Math.min(probe.sizeBytes, Math.max(BTRFS_RESIZE_FLOOR_BYTES, minimum + btrfsMargin(minimum))), warnings: [] };
    } finally {
      await unmountAll(guest);
    }
  },
  async grow({ guest, device }) {
    await mount(guest, device, '/');
    try {
      await btrfsResize(guest, '/');
    } finally {
      await unmountAll(guest);
    }
  },
  async shrink({ guest, device }, sizeBytes) {
    await mount(guest, device, '/');
    try {
      await btrfsResize(guest, '/', sizeBytes);
    } finally {
      await unmountAll(guest);
    }
  },
  // The kernel rounds a resize down to the sector size (fs/btrfs/ioctl.c, btrfs_ioctl_resize).
  fitBytes: wholeBlocks,
};
