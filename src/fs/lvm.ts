// LVM2 physical volume as the last partition: label "LABELONE" in one of the first four sectors
// (lib/label/label.h) with the PV's size; resized with its last logical volume (the one whose extents end last on
// the PV) and that LV's filesystem, in the appliance.
import { NotSupported, Refused } from '../util/errors.js';
import { alignUp } from '../util/units.js';
import { vfsType } from '../guest/filesystems.js';
import { lvSegments, samePartition, lvresize, lvresizeFree, pvLayout, pvresize, type LvSegment, type PvLayout } from '../guest/lvm.js';
import type { GuestSession } from '../guest/session.js';
import type { Filesystem, FsProbe } from './types.js';

export function probeLvm(head: Buffer): FsProbe | undefined {
  for (let sector = 0; sector < 4; sector++) {
    const at = sector * 512;
    if (head.length < at + 512 || head.toString('latin1', at, at + 8) !== 'LABELONE') continue;
    if (head.toString('latin1', at + 24, at + 32) !== 'LVM2 001') continue;
    const pvHeader = at + head.readUInt32LE(at + 20);
    if (pvHeader + 40 > head.length) return undefined;
    return { type: 'lvm', sizeBytes: Number(head.readBigUInt64LE(pvHeader + 32)) };
  }
  return undefined;
}

interface LastVolume {
  pv: PvLayout;
  lv: LvSegment;
  fs: Filesystem;
}

/** The LV whose extents end last on the PV; it must be one linear segment so that it can end with the PV. */
async function lastVolume(guest: GuestSession, device: string, lookup: (type: string) => Filesystem): Promise<LastVolume> {
  const pv = await pvLayout(guest, device);
  const all = await lvSegments(guest);
  const here = all.filter((s) => samePartition(device, s.pvDevice));
  if (here.length === 0) throw new NotSupported(`The LVM physical volume on ${device} holds no logical volume to resize.`);
  const lv = here.reduce((a, b) => (b.pvStartExtent + b.extents > a.pvStartExtent + a.extents ? b : a));
  if (all.filter((s) => s.lvPath === lv.lvPath).length > 1) {
    throw new NotSupported(`The last logical volume ${lv.lvPath} has several segments; resize it inside the guest instead.`);
  }
  const type = await vfsType(guest, lv.lvPath);
  return { pv, lv, fs: lookup(type || 'unknown content') };
}

/** Builds the LVM handler; `lookup` is the registry's (passed in to keep the import graph acyclic). */
export function makeLvm(lookup: (type: string) => Filesystem): Filesystem {
  return {
    type: 'lvm',
    noun: 'an LVM physical volume',
    canGrow: true,
    measuresInGuest: true,
    probe: probeLvm,
    async measure({ guest, device }) {
      const { pv, lv, fs } = await lastVolume(guest, device, lookup);
      const lvBytes = lv.extents * pv.extentBytes;
      const inner = await fs.measure({ guest, device: lv.lvPath }, { type: fs.type, sizeBytes: lvBytes });
      const lvMinimum = fs.cannotShrink ? lvBytes : alignUp(inner.minimumBytes, pv.extentBytes);
      // One spare extent: pvresize keeps the metadata area's alignment.
      return { minimumBytes: pv.peStartBytes + (lv.pvStartExtent + 1) * pv.extentBytes + lvMinimum, warnings: inner.warnings };
    },
    async grow({ guest, device }) {
      await pvresize(guest, device);
      const { lv, fs } = await lastVolume(guest, device, lookup);
      await lvresizeFree(guest, lv.lvPath, 100);
      await fs.grow({ guest, device: lv.lvPath });
    },
    async shrink({ guest, device }, sizeBytes) {
      const { pv, lv, fs } = await lastVolume(guest, device, lookup);
      if (fs.cannotShrink) throw new Refused(`The last logical volume ${lv.lvPath} holds ${fs.noun}, which cannot shrink.`);
      const pvExtents = Math.floor((sizeBytes - pv.peStartBytes) / pv.extentBytes) - 1;
      const lvExtents = pvExtents - lv.pvStartExtent;
      if (lvExtents < 1) throw new Refused(`The partition would be too small for the logical volume ${lv.lvPath}.`);
      const lvBytes = lvExtents * pv.extentBytes;
      await fs.shrink({ guest, device: lv.lvPath }, lvBytes);
      await lvresize(guest, lv.lvPath, lvBytes / (1024 * 1024));
      await pvresize(guest, device, sizeBytes);
    },
    // pvresize takes the size in bytes and records it in sectors: the PV ends with the partition; the last LV and
    // its filesystem are whole extents inside it.
    fitBytes: (containerBytes) => containerBytes,
  };
}
