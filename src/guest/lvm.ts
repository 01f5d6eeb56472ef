// Typed LVM calls in the appliance: physical volumes, volume groups and logical volumes.
import type { GuestSession } from './session.js';
import { parseStructList, parseLines } from './parse.js';

export interface PhysicalVolume {
  device: string;
  uuid: string;
  sizeBytes: number;
  freeBytes: number;
}

export interface LogicalVolume {
  path: string; // /dev/VG/LV
  sizeBytes: number;
}

export async function physicalVolumes(guest: GuestSession): Promise<PhysicalVolume[]> {
  return parseStructList(await guest.call('pvs-full')).map((pv) => ({
    device: pv.pv_name ?? '',
    uuid: pv.pv_uuid ?? '',
    sizeBytes: Number(pv.pv_size),
    freeBytes: Number(pv.pv_free),
  }));
}

/** Logical volumes in the order LVM lists them; sizes come from lvs-full, paths from lvs (same order). */
export async function logicalVolumes(guest: GuestSession): Promise<LogicalVolume[]> {
  const full = parseStructList(await guest.call('lvs-full'));
  const paths = parseLines(await guest.call('lvs'));
  return full.map((lv, index) => ({ path: paths[index] ?? '', sizeBytes: Number(lv.lv_size) }));
}

export async function pvresize(guest: GuestSession, device: string, sizeBytes?: number): Promise<void> {
  if (sizeBytes === undefined) await guest.call('pvresize', device);
  else await guest.call('pvresize-size', device, sizeBytes);
}

export async function lvresize(guest: GuestSession, lv: string, sizeMiB: number): Promise<void> {
  await guest.call('lvresize', lv, sizeMiB);
}

export async function lvresizeFree(guest: GuestSession, lv: string, percent = 100): Promise<void> {
  await guest.call('lvresize-free', lv, percent);
}

export async function activateAll(guest: GuestSession, active: boolean): Promise<void> {
  await guest.call('vg-activate-all', active);
}

export interface VolumeGroup {
  name: string;
  freeBytes: number;
}

export async function volumeGroups(guest: GuestSession): Promise<VolumeGroup[]> {
  return parseStructList(await guest.call('vgs-full')).map((vg) => ({ name: vg.vg_name ?? '', freeBytes: Number(vg.vg_free) }));
}

/** Creates an LV over `percent` % of the VG's free extents. */
export async function lvcreateFree(guest: GuestSession, name: string, vg: string, percent = 100): Promise<void> {
  await guest.call('lvcreate-free', name, vg, percent);
}

export async function lvremove(guest: GuestSession, path: string): Promise<void> {
  await guest.call('lvremove', path);
}
