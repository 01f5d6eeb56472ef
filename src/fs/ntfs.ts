// NTFS: boot sector at 0 (total sectors at 0x28), measured and resized by ntfsresize. A dirty volume (Windows
// did not shut down cleanly) cannot be measured exactly: used space is the fallback, with the CHKDSK advice.
import { mountReadOnly, ntfsClearDirty, ntfsresize, statvfs, unmountAll, vfsMinimumSize } from '../guest/filesystems.js';
import { MiB } from '../util/units.js';
import type { Filesystem, FsProbe } from './types.js';

export const NTFS_DIRTY_WARNING = 'Filesystem is dirty. The estimates may be inaccurate';
export const CHKDSK_HINT = 'Start Windows and run CHKDSK /F on the volume (or shut Windows down cleanly), then try again.';

export function probeNtfs(head: Buffer): FsProbe | undefined {
  if (head.length < 512 || head.toString('latin1', 3, 11) !== 'NTFS    ') return undefined;
  const bytesPerSector = head.readUInt16LE(0x0b);
  const totalSectors = Number(head.readBigUInt64LE(0x28));
  // Sectors per cluster: above 0x80 the byte is a negative power of two (clusters of 64 KiB and more).
  const perCluster = head.readUInt8(0x0d);
  const clusterSectors = perCluster > 0x80 ? 2 ** (256 - perCluster) : perCluster;
  // The backup boot sector lies just past the volume's last sector.
  return { type: 'ntfs', sizeBytes: (totalSectors + 1) * bytesPerSector, blockBytes: clusterSectors * bytesPerSector };
}

/** Room above ntfsresize's own minimum, so that "resize to Minimum succeeds" holds (docs/resize.md). */
export const NTFS_MARGIN_BYTES = 16 * MiB;
/** A dirty volume has no ntfsresize estimate: its used space plus this much (with the CHKDSK advice). */
export const NTFS_DIRTY_MARGIN_BYTES = 64 * MiB;

export const ntfs: Filesystem = {
  type: 'ntfs',
  noun: 'an NTFS filesystem',
  canGrow: true,
  measuresInGuest: true,
  probe: probeNtfs,
  async measure({ guest, device }, probe) {
    try {
      const minimum = await vfsMinimumSize(guest, device);
      return { minimumBytes: minimum + NTFS_MARGIN_BYTES, warnings: [] };
    } catch (error) {
      // ntfsresize refuses a volume marked dirty; the used space is the honest fallback.
      try {
        await mountReadOnly(guest, device, '/');
        const vfs = await statvfs(guest, '/');
        await unmountAll(guest);
        const used = (vfs.blocks - vfs.freeBlocks) * vfs.blockSize;
        return { minimumBytes: Math.min(probe.sizeBytes, used + NTFS_DIRTY_MARGIN_BYTES), warnings: [NTFS_DIRTY_WARNING, CHKDSK_HINT] };
      } catch {
        throw error;
      }
    }
  },
  // ntfsresize checks the volume before it moves anything and marks it for CHKDSK afterwards as a precaution;
  // the mark is cleared so that the next measure (and the next resize) can run (see docs/resize.md).
  async grow({ guest, device }) {
    await ntfsresize(guest, device);
    await ntfsClearDirty(guest, device);
  },
  async shrink({ guest, device }, sizeBytes) {
    await ntfsresize(guest, device, sizeBytes);
    await ntfsClearDirty(guest, device);
  },
  // NTFS keeps its backup boot sector in the partition's last sector, where ntfsfix and CHKDSK look for it.
  // Given the new partition's exact size in plain bytes, ntfsresize sizes the volume in whole clusters below it
  // and writes the backup boot sector at size - 512 (ntfsresize.c update_bootsector, "reliable size"); any
  // smaller size (the former 4 KiB rounding on GPT) leaves it inside the partition, and a later grow by less than
  // a cluster would find "nothing to do" and not move it.
  fitBytes: (containerBytes) => containerBytes,
};
