// The fill rule of docs/resize.md as an oracle: the content spans its container (partition, whole disk or LV) the
// way its format expects, read by the filesystem's own tools and, for NTFS, from the raw boot sectors.
import { open } from 'node:fs/promises';
import type { FsKind } from './filesystems.js';
import { tool } from './run.js';

function field(text: string, pattern: RegExp, what: string): number {
  const m = pattern.exec(text);
  if (m === null) throw new Error(`no "${what}" in:\n${text}`);
  return Number(m[1]);
}

async function readSector(device: string, offsetBytes: number, bytes: number): Promise<Buffer> {
  const fd = await open(device, 'r');
  try {
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await fd.read(buffer, 0, bytes, offsetBytes);
    return buffer.subarray(0, bytesRead);
  } finally {
    await fd.close();
  }
}

/**
 * ext2/3/4: whole blocks (in whole 4 KiB pages) up to the end, except a last group too small for its own metadata, which mke2fs and
 * resize2fs both drop (ext2fs_initialize, resize2fs adjust_fs_info: rem < overhead + 50).
 */
async function extFill(device: string, containerBytes: number): Promise<string[]> {
  const { stdout } = await tool('dumpe2fs', ['-h', device]);
  const block = field(stdout, /^Block size:\s+(\d+)$/m, 'Block size');
  const blocks = field(stdout, /^Block count:\s+(\d+)$/m, 'Block count');
  const perGroup = field(stdout, /^Blocks per group:\s+(\d+)$/m, 'Blocks per group');
  const first = field(stdout, /^First block:\s+(\d+)$/m, 'First block');
  const inodeBlocks = field(stdout, /^Inode blocks per group:\s+(\d+)$/m, 'Inode blocks per group');
  const reservedGdt = /^Reserved GDT blocks:\s+(\d+)$/m.test(stdout) ? field(stdout, /^Reserved GDT blocks:\s+(\d+)$/m, 'Reserved GDT blocks') : 0;
  // 1 KiB and 2 KiB blocks come in whole 4 KiB pages (mke2fs, and resize2fs growing to the device).
  const step = Math.max(block, 4096);
  const whole = (Math.floor(containerBytes / step) * step) / block;
  const rem = (whole - first) % perGroup;
  const descBlocks = Math.ceil(Math.ceil((whole - first) / perGroup) * 64 / block);
  const tooSmall = rem > 0 && rem < 3 + inodeBlocks + reservedGdt + descBlocks + 50;
  if (blocks === whole || (tooSmall && blocks === whole - rem)) return [];
  return [`the ext filesystem has ${blocks} blocks of ${block} bytes; its ${containerBytes}-byte container holds ${whole}${tooSmall ? ` (${whole - rem} without the too small last group)` : ''}`];
}

/** xfs: whole blocks, less a tail too short for an allocation group (kernel growfs: 64 blocks; mkfs.xfs: 16 MiB). */
async function xfsFill(device: string, containerBytes: number): Promise<string[]> {
  const { stdout } = await tool('xfs_db', ['-r', '-c', 'sb 0', '-c', 'p dblocks', '-c', 'p blocksize', '-c', 'p agblocks', device]);
  const dblocks = field(stdout, /^dblocks = (\d+)$/m, 'dblocks');
  const block = field(stdout, /^blocksize = (\d+)$/m, 'blocksize');
  const agblocks = field(stdout, /^agblocks = (\d+)$/m, 'agblocks');
  // 1 KiB and 2 KiB blocks come in whole 4 KiB pages (mke2fs, and resize2fs growing to the device).
  const step = Math.max(block, 4096);
  const whole = (Math.floor(containerBytes / step) * step) / block;
  const tail = whole % agblocks;
  const tooShort = tail > 0 && tail < Math.max(64, (16 * 1024 * 1024) / block);
  if (dblocks === whole || (tooShort && dblocks === whole - tail)) return [];
  return [`the xfs filesystem has ${dblocks} blocks of ${block} bytes; its ${containerBytes}-byte container holds ${whole}`];
}

/** btrfs: the device item spans the container rounded down to the sector size (btrfs_ioctl_resize, mkfs). */
async function btrfsFill(device: string, containerBytes: number): Promise<string[]> {
  const { stdout } = await tool('btrfs', ['inspect-internal', 'dump-super', device]);
  const total = field(stdout, /^dev_item\.total_bytes\s+(\d+)$/m, 'dev_item.total_bytes');
  const sector = field(stdout, /^sectorsize\s+(\d+)$/m, 'sectorsize');
  const want = Math.floor(containerBytes / sector) * sector;
  return total === want ? [] : [`the btrfs device item spans ${total} bytes; its ${containerBytes}-byte container calls for ${want}`];
}

/**
 * NTFS: the backup boot sector is the container's last sector (where ntfsfix and CHKDSK look for it) and the
 * volume reaches it: number_of_sectors is below that sector by less than a cluster (mkntfs: exactly one sector;
 * ntfsresize: whole clusters).
 */
async function ntfsFill(device: string, containerBytes: number): Promise<string[]> {
  const boot = await readSector(device, 0, 4096);
  const bytesPerSector = boot.readUInt16LE(0x0b);
  const perCluster = boot.readUInt8(0x0d);
  const clusterSectors = perCluster > 0x80 ? 2 ** (256 - perCluster) : perCluster;
  const volumeSectors = Number(boot.readBigUInt64LE(0x28));
  const lastSector = Math.floor(containerBytes / bytesPerSector) - 1;
  const problems: string[] = [];
  if (volumeSectors > lastSector || lastSector - volumeSectors >= clusterSectors) {
    problems.push(`the NTFS volume has ${volumeSectors} sectors; its container's last sector is ${lastSector} (clusters of ${clusterSectors} sectors)`);
  }
  const backup = await readSector(device, lastSector * bytesPerSector, bytesPerSector);
  if (!backup.equals(boot.subarray(0, bytesPerSector))) {
    problems.push(`the last sector (${lastSector}) of the NTFS container is not the backup boot sector`);
  }
  return problems;
}

/** Bytes a swap area spans must be the container in whole pages. */
function swapFill(sizeBytes: number, containerBytes: number): string[] {
  const want = Math.floor(containerBytes / 4096) * 4096;
  return sizeBytes === want ? [] : [`the swap area spans ${sizeBytes} bytes; its ${containerBytes}-byte container calls for ${want}`];
}

/** Every way in which the content on `device` does not fill its `containerBytes` as its format expects. */
export async function fillProblems(device: string, kind: FsKind | 'swap', containerBytes: number, swapBytes = 0): Promise<string[]> {
  switch (kind) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return extFill(device, containerBytes);
    case 'xfs':
      return xfsFill(device, containerBytes);
    case 'btrfs':
      return btrfsFill(device, containerBytes);
    case 'ntfs':
      return ntfsFill(device, containerBytes);
    case 'swap':
      return swapFill(swapBytes, containerBytes);
  }
}
