// LVM2 physical volume: label "LABELONE" in one of the first four sectors (lib/label/label.h), pv_header with
// the device size. Resizing a PV with its last LV and that LV's filesystem is not built yet (see docs/resize.md).
import { NotSupported } from '../util/errors.js';
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

const notYet = (): never => {
  throw new NotSupported('Resizing an LVM physical volume with its logical volumes is not supported yet; resize without --resize_partition, then use pvresize and lvresize inside the guest.');
};

export const lvm: Filesystem = {
  type: 'lvm',
  noun: 'an LVM physical volume',
  canGrow: false,
  cannotShrink: 'shrinking an LVM physical volume is not supported yet',
  measuresInGuest: false,
  probe: probeLvm,
  async measure(_target, probe) {
    return { minimumBytes: probe.sizeBytes, warnings: ['The last partition holds an LVM physical volume, which this version cannot resize; Minimum keeps it as it is.'] };
  },
  grow: notYet,
  shrink: notYet,
};
