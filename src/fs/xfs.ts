// XFS: superblock at 0 (big-endian; xfs_format.h), grown with xfs_growfs while mounted; XFS cannot shrink.
import { mount, unmountAll, xfsGrow } from '../guest/filesystems.js';
import { Refused } from '../util/errors.js';
import { type Filesystem, type FsProbe, wholeBlocks } from './types.js';

export function probeXfs(head: Buffer): FsProbe | undefined {
  if (head.length < 512 || head.toString('latin1', 0, 4) !== 'XFSB') return undefined;
  const blockBytes = head.readUInt32BE(4);
  const blocks = Number(head.readBigUInt64BE(8));
  return { type: 'xfs', sizeBytes: blocks * blockBytes, blockBytes };
}

export const XFS_CANNOT_SHRINK = 'XFS filesystems cannot shrink';

export const xfs: Filesystem = {
  type: 'xfs',
  noun: 'an xfs filesystem',
  canGrow: true,
  cannotShrink: XFS_CANNOT_SHRINK,
  measuresInGuest: false,
  probe: probeXfs,
  async measure(_target, probe) {
    return { minimumBytes: probe.sizeBytes, warnings: [] };
  },
  async grow({ guest, device }) {
    await mount(guest, device, '/');
    try {
      await xfsGrow(guest, '/');
    } finally {
      await unmountAll(guest);
    }
  },
  async shrink() {
    throw new Refused(`${XFS_CANNOT_SHRINK}.`);
  },
  // Only xfs_growfs fills a container: whole blocks, less a tail too short for an allocation group (64 blocks).
  fitBytes: wholeBlocks,
};
