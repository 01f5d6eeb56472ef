// Filesystems by type, and identification of a container's content from its first bytes.
import { NotSupported } from '../util/errors.js';
import { btrfs } from './btrfs.js';
import { ext2, ext3, ext4 } from './ext.js';
import { makeLvm } from './lvm.js';
import { ntfs } from './ntfs.js';
import { swap } from './swap.js';
import { xfs } from './xfs.js';
import type { Filesystem, FsProbe, FsType } from './types.js';

/** What an LVM PV's last LV may hold. */
const IN_LV: Record<string, Filesystem> = { ext2, ext3, ext4, ntfs, btrfs, xfs };
const lvm = makeLvm((type) => {
  const fs = IN_LV[type];
  if (!fs) throw new NotSupported(`The last logical volume holds ${type}, which prl_disk_tool cannot resize.`);
  return fs;
});
const BY_TYPE: Record<FsType, Filesystem> = { ext2, ext3, ext4, ntfs, btrfs, xfs, swap, lvm };

/** Probing order: signatures that can coexist with stale ones of others come first (LVM, swap, then filesystems). */
const ORDER: Filesystem[] = [lvm, swap, xfs, btrfs, ntfs, ext4];

export function filesystemFor(type: string): Filesystem {
  const fs = (BY_TYPE as Record<string, Filesystem | undefined>)[type];
  if (!fs) throw new NotSupported(`The last partition holds ${type}, which prl_disk_tool cannot resize.`);
  return fs;
}

export interface Identified {
  fs: Filesystem;
  probe: FsProbe;
}

/** The content of a container from its first PROBE_BYTES, or undefined when no supported signature is found. */
export function identify(head: Buffer): Identified | undefined {
  for (const fs of ORDER) {
    const probe = fs.probe(head);
    if (probe) return { fs: BY_TYPE[probe.type], probe };
  }
  // ext2 and ext3 are told apart from ext4 by their feature flags; probeExt did that for ext4's slot.
  for (const fs of [ext3, ext2]) {
    const probe = fs.probe(head);
    if (probe) return { fs, probe };
  }
  return undefined;
}

export { type Filesystem, type FsProbe, type FsType, PROBE_BYTES } from './types.js';
