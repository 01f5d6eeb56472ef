// Typed filesystem calls in the appliance: identify, mount, measure, check, resize, trim, swap.
import type { GuestSession } from './session.js';
import { parseFields, parseInteger } from './parse.js';
import { samePartition } from './lvm.js';
import { ToolError } from '../util/errors.js';

/** Device → filesystem type (or "unknown"), as libguestfs' list-filesystems reports them. */
export async function listFilesystems(guest: GuestSession): Promise<Record<string, string>> {
  return parseFields(await guest.call('list-filesystems'));
}

export async function vfsType(guest: GuestSession, device: string): Promise<string> {
  const probe = await guest.attempt('vfs-type', device);
  return probe.ok ? probe.out.trim() : '';
}

export async function mount(guest: GuestSession, device: string, mountpoint = '/', options?: string): Promise<void> {
  if (options !== undefined) await guest.call('mount-options', options, device, mountpoint);
  else await guest.call('mount', device, mountpoint);
}

export async function mountReadOnly(guest: GuestSession, device: string, mountpoint = '/'): Promise<void> {
  await guest.call('mount-ro', device, mountpoint);
}

export async function unmountAll(guest: GuestSession): Promise<void> {
  await guest.call('umount-all');
}

/** Smallest size the filesystem can shrink to (ext2/3/4, ntfs, btrfs mounted, xfs mounted). */
export async function vfsMinimumSize(guest: GuestSession, deviceOrMountpoint: string): Promise<number> {
  return parseInteger(await guest.call('vfs-minimum-size', deviceOrMountpoint), 'vfs-minimum-size');
}

export interface StatVfs {
  blockSize: number;
  blocks: number;
  freeBlocks: number;
}

export async function statvfs(guest: GuestSession, path: string): Promise<StatVfs> {
  const fields = parseFields(await guest.call('statvfs', path));
  return { blockSize: Number(fields.bsize), blocks: Number(fields.blocks), freeBlocks: Number(fields.bfree) };
}

/** Forced e2fsck that fixes what it safely can (as resize2fs requires before a shrink). */
export async function e2fsck(guest: GuestSession, device: string): Promise<void> {
  await guest.call('e2fsck', device, 'correct:true', 'forceall:false');
}

export async function e2fsckForced(guest: GuestSession, device: string): Promise<void> {
  await guest.call('e2fsck-f', device);
}

export async function resize2fs(guest: GuestSession, device: string, sizeBytes?: number): Promise<void> {
  if (sizeBytes === undefined) await guest.call('resize2fs', device);
  else await guest.call('resize2fs-size', device, sizeBytes);
}

export async function ntfsresize(guest: GuestSession, device: string, sizeBytes?: number): Promise<void> {
  if (sizeBytes === undefined) await guest.call('ntfsresize', device);
  else await guest.call('ntfsresize', device, `size:${sizeBytes}`);
}

/** Resizes a mounted btrfs; without a size it fills its device. */
export async function btrfsResize(guest: GuestSession, mountpoint: string, sizeBytes?: number): Promise<void> {
  if (sizeBytes === undefined) await guest.call('btrfs-filesystem-resize', mountpoint);
  else await guest.call('btrfs-filesystem-resize', mountpoint, `size:${sizeBytes}`);
}

export async function xfsGrow(guest: GuestSession, mountpoint: string): Promise<void> {
  await guest.call('xfs-growfs', mountpoint, 'datasec:true');
}

export async function fstrim(guest: GuestSession, mountpoint: string): Promise<void> {
  await guest.call('fstrim', mountpoint);
}

/** Discards a whole device or partition (the guest's discard reaches the image when the drive allows it). */
export async function blkdiscard(guest: GuestSession, device: string): Promise<void> {
  await guest.call('blkdiscard', device);
}

export async function mkswap(guest: GuestSession, device: string, uuid: string, label: string): Promise<void> {
  const args = [device];
  if (uuid) args.push(`uuid:${uuid}`);
  if (label) args.push(`label:${label}`);
  await guest.call('mkswap', ...args);
}

export async function sync(guest: GuestSession): Promise<void> {
  await guest.call('sync');
}

/** ext2/3/4 superblock state ("clean", "not clean", "clean with errors"), from tune2fs -l. */
export async function extState(guest: GuestSession, device: string): Promise<string> {
  return (parseFields(await guest.call('tune2fs-l', device))['Filesystem state'] ?? '').trim();
}

/** Whether ntfs-3g can mount the volume read-write (false when dirty, hibernated or fast-started). */
export async function ntfsWritable(guest: GuestSession, device: string): Promise<boolean> {
  const probe = await guest.attempt('ntfs-3g-probe', true, device);
  return probe.ok && probe.out.trim() === '0';
}

/**
 * Clears the NTFS volume dirty flag that ntfsresize sets as a precaution (ntfsfix -d). libguestfs has no call for
 * it, so it runs through `debug sh`, which sees the appliance's raw device names (the data disk may be /dev/sdb
 * there): the raw name is found among the NTFS devices blkid lists, by partition number. Never user text.
 */
export async function ntfsClearDirty(guest: GuestSession, device: string): Promise<void> {
  // A logical volume's path (/dev/VG/LV) is the same inside and outside; LVM names are [A-Za-z0-9+_.-].
  if (/^\/dev\/[A-Za-z0-9+_.-]+\/[A-Za-z0-9+_.-]+$/.test(device)) {
    await guest.call('debug', 'sh', `ntfsfix -d ${device}`);
    return;
  }
  const listed = (await guest.call('debug', 'sh', 'blkid -t TYPE=ntfs -o device')).split('\n').map((line) => line.trim());
  const raw = listed.filter((name) => /^\/dev\/[sv]d[a-z]+[0-9]*$/.test(name) && samePartition(device, name));
  if (raw.length !== 1) throw new ToolError('tool-failed', `The appliance cannot tell which appliance device is ${device} (NTFS devices: ${listed.join(', ') || 'none'})`);
  await guest.call('debug', 'sh', `ntfsfix -d ${raw[0]}`);
}
