// Typed LVM calls in the appliance: physical volumes, volume groups and logical volumes.
import type { GuestSession } from './session.js';
import { parseStructList, parseLines } from './parse.js';

export interface LogicalVolume {
  path: string; // /dev/VG/LV
  sizeBytes: number;
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

export interface LvSegment {
  lvName: string;
  vgName: string;
  lvPath: string;
  /** First physical extent on the PV, and the segment's length in extents. */
  pvStartExtent: number;
  extents: number;
  /** "/dev/sda2(0)" form: the PV holding the segment. */
  pvDevice: string;
}

export interface PvLayout {
  device: string;
  peStartBytes: number;
  extentBytes: number;
  extentCount: number;
}

/** Runs an LVM report in the appliance with JSON output (libguestfs has no call for segments; `debug sh` runs it). */
async function lvmJson(guest: GuestSession, command: string): Promise<Record<string, string>[]> {
  const out = await guest.call('debug', 'sh', `lvm ${command} --reportformat json --units b --nosuffix 2>/dev/null`);
  const parsed = JSON.parse(out) as { report: Record<string, Record<string, string>[]>[] };
  const first = parsed.report[0] ?? {};
  return Object.values(first)[0] ?? [];
}

/**
 * `debug sh` output carries the appliance's raw device names (the data disk may be /dev/sdb there, while the
 * API calls it /dev/sda): compare partition suffixes, the appliance having one data disk.
 */
export function samePartition(apiDevice: string, rawDevice: string): boolean {
  const suffix = (name: string): string | undefined => /^\/dev\/(?:[sv]d[a-z]+)([0-9]*)$/.exec(name)?.[1];
  const a = suffix(apiDevice);
  return a !== undefined && a === suffix(rawDevice);
}

export async function pvLayout(guest: GuestSession, device: string): Promise<PvLayout> {
  const rows = await lvmJson(guest, 'pvs -o pv_name,pe_start,vg_extent_size,pv_pe_count');
  const row = rows.find((r) => samePartition(device, r.pv_name ?? ''));
  if (!row) throw new Error(`LVM reports no physical volume on ${device} (it sees ${rows.map((r) => r.pv_name).join(', ') || 'none'})`);
  return { device, peStartBytes: Number(row.pe_start), extentBytes: Number(row.vg_extent_size), extentCount: Number(row.pv_pe_count) };
}

export async function lvSegments(guest: GuestSession): Promise<LvSegment[]> {
  const rows = await lvmJson(guest, 'lvs --segments -o lv_name,vg_name,lv_path,seg_pe_ranges');
  return rows.flatMap((row) => {
    // seg_pe_ranges: "/dev/sda2:0-1" (inclusive extent range on the PV).
    const match = /^(.*):(\d+)-(\d+)$/.exec((row.seg_pe_ranges ?? '').trim());
    if (!match) return [];
    return [{
      lvName: row.lv_name ?? '',
      vgName: row.vg_name ?? '',
      lvPath: row.lv_path ?? '',
      pvDevice: match[1]!,
      pvStartExtent: Number(match[2]),
      extents: Number(match[3]) - Number(match[2]) + 1,
    }];
  });
}
