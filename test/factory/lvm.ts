// LVM on the host without device-mapper (this kernel has none): metadata through `lvm --driverloaded n`, restricted
// to one loop device, and linear LVs reached as byte ranges of the PV, so nothing is ever activated.
import { rm } from 'node:fs/promises';
import { tool } from './run.js';

/** A --config that sees only `device`, keeps no backups, hints or devices file, and never waits for udev. */
function config(device: string): string {
  return [
    `devices { use_devicesfile=0 obtain_device_list_from_udev=0 hints="none" scan_lvs=0 filter=["a|^${device}$|","r|.*|"] }`,
    'activation { udev_sync=0 udev_rules=0 }',
    'backup { backup=0 archive=0 }',
  ].join(' ');
}

function lvm(device: string, command: string, args: string[]): Promise<{ stdout: string }> {
  return tool('lvm', [command, '--driverloaded', 'n', '--config', config(device), ...args]);
}

export const EXTENT_BYTES = 4 * 1024 * 1024;
export const FIRST_LV = 'first';
export const LAST_LV = 'data';

/** PV on `device`, VG `vg` with a small LV then the last LV filling the rest; returns nothing (read it back with readLayout). */
export async function createVg(device: string, vg: string): Promise<void> {
  await lvm(device, 'pvcreate', ['-y', '-ff', device]);
  await lvm(device, 'vgcreate', ['-y', '-s', `${EXTENT_BYTES / 1024}k`, vg, device]);
  await lvm(device, 'lvcreate', ['-y', '-an', '-Zn', '-Wn', '-n', FIRST_LV, '-L', '8m', vg]);
  await lvm(device, 'lvcreate', ['-y', '-an', '-Zn', '-Wn', '-n', LAST_LV, '-l', '100%FREE', vg]);
}

export interface LvmLayout {
  vg: string;
  pvSizeBytes: number;
  devSizeBytes: number;
  peStartBytes: number;
  extentBytes: number;
  /** The LV whose last extent is highest on the PV, with its byte range inside the PV. */
  last: { name: string; offsetBytes: number; sizeBytes: number };
}

interface SegRow {
  lv_name: string;
  vg_name: string;
  seg_pe_ranges: string;
  seg_size_pe: string;
  vg_extent_size: string;
}

/** Reads PV and LV geometry read-only; the last LV must be one linear segment on this PV. */
export async function readLayout(device: string): Promise<LvmLayout> {
  const pvs = JSON.parse(
    (await lvm(device, 'pvs', ['--readonly', '--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'pv_name,vg_name,pv_size,dev_size,pe_start'])).stdout,
  ) as { report: { pv: Record<string, string>[] }[] };
  const pv = pvs.report[0]?.pv?.[0];
  if (pv === undefined) throw new Error(`no LVM physical volume on ${device}`);
  const segs = JSON.parse(
    (await lvm(device, 'lvs', ['--readonly', '--segments', '--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'lv_name,vg_name,seg_pe_ranges,seg_size_pe,vg_extent_size'])).stdout,
  ) as { report: { seg: SegRow[] }[] };
  const rows = segs.report[0]?.seg ?? [];
  if (rows.length === 0) throw new Error(`volume group ${pv.vg_name} on ${device} has no logical volumes`);
  const extentBytes = Number(rows[0]!.vg_extent_size);
  const ranges = rows.map((row) => {
    const m = /^(\S+):(\d+)-(\d+)$/.exec(row.seg_pe_ranges);
    if (m === null || m[1] !== device) throw new Error(`LV ${row.lv_name} segment "${row.seg_pe_ranges}" is not one linear range on ${device}`);
    return { name: row.lv_name, first: Number(m[2]), lastPe: Number(m[3]) };
  });
  const last = ranges.reduce((a, b) => (b.lastPe > a.lastPe ? b : a));
  if (ranges.filter((r) => r.name === last.name).length !== 1) throw new Error(`LV ${last.name} has more than one segment`);
  const peStartBytes = Number(pv.pe_start);
  return {
    vg: pv.vg_name!,
    pvSizeBytes: Number(pv.pv_size),
    devSizeBytes: Number(pv.dev_size),
    peStartBytes,
    extentBytes,
    last: { name: last.name, offsetBytes: peStartBytes + last.first * extentBytes, sizeBytes: (last.lastPe - last.first + 1) * extentBytes },
  };
}

/** vgck on the metadata: consistent copies, sane areas. */
export async function checkVg(device: string, vg: string): Promise<void> {
  await lvm(device, 'vgck', [vg]);
}

/** Forgets a VG on the host: nothing is activated or backed up, but lvm may leave its lock file behind. */
export async function forgetVg(vg: string): Promise<void> {
  await rm(`/run/lock/lvm/V_${vg}`, { force: true });
  await rm(`/run/lock/lvm/V_${vg}:aux`, { force: true });
}
