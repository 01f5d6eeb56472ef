// Opening an image for a command: resolve --hdd, take the lock, and refuse an image a running VM holds or a
// read-only filesystem keeps.
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { resolveHdd, type ImageRef } from '../formats/resolve.js';
import { Refused } from '../util/errors.js';
import { acquireLock, type HeldLock } from '../util/lock.js';
import { onExit } from '../util/cancel.js';
import { infoChain } from '../formats/qcow2/qemu-img.js';
import { topDeltaPath } from '../formats/image.js';

export interface OpenedImage {
  ref: ImageRef;
  /** The --hdd argument as given, for messages. */
  hdd: string;
  lock: HeldLock;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** A change needs to write the image files and their folder (temporary files, renames); refuse early if it cannot. */
function requireWritable(ref: ImageRef, hdd: string): void {
  const paths = ref.format === 'qcow2' ? [ref.path, dirname(ref.path)] : [ref.folder, ref.descriptorPath, topDeltaPath(ref)];
  for (const path of paths) {
    try {
      accessSync(path, constants.W_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === 'EROFS' ? 'is on a read-only filesystem' : `cannot be written (${code})`;
      const subject = ref.format === 'qcow2' && path === ref.path ? `"${hdd}"` : `"${path}" (part of "${hdd}")`;
      throw new Refused(`${subject} ${why}; remount it read-write or copy the image elsewhere. Nothing was changed.`);
    }
  }
}

/** ploop's lock file is created on first use; in a folder nobody may write to, a query locks the descriptor itself. */
function lockPathFor(ref: ImageRef, mode: 'query' | 'modify'): string {
  if (ref.format === 'ploop' && mode === 'query' && !existsSync(ref.lockPath) && !writable(ref.folder)) return ref.descriptorPath;
  return ref.lockPath;
}

/**
 * Shared lock for queries (works on a read-only file), exclusive for changes. A modifying command also
 * asks qemu-img to take QEMU's own image lock, which fails while a VM has the image open.
 */
export async function openImage(hdd: string, mode: 'query' | 'modify'): Promise<OpenedImage> {
  const ref = resolveHdd(hdd);
  if (mode === 'modify') requireWritable(ref, hdd);
  const lock = acquireLock(lockPathFor(ref, mode), mode === 'query' ? 'shared' : 'exclusive', hdd, ref.format === 'ploop');
  const unregister = onExit(() => lock.release());
  const held: HeldLock = {
    path: lock.path,
    release() {
      unregister();
      lock.release();
    },
  };
  try {
    if (mode === 'modify') {
      if (ref.format === 'qcow2') await infoChain(ref.path, 'qcow2', false);
      else await infoChain(topDeltaPath(ref), 'parallels', false);
    }
  } catch (error) {
    held.release();
    throw error;
  }
  return { ref, hdd, lock: held };
}
