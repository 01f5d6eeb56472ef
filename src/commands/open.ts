// Opening an image for a command: resolve --hdd, take the lock, and refuse an image a running VM holds.
import { resolveHdd, type ImageRef } from '../formats/resolve.js';
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

/**
 * Shared lock for queries (works on a read-only file), exclusive for changes. A modifying command also
 * asks qemu-img to take QEMU's own image lock, which fails while a VM has the image open.
 */
export async function openImage(hdd: string, mode: 'query' | 'modify'): Promise<OpenedImage> {
  const ref = resolveHdd(hdd);
  const lock = acquireLock(ref.lockPath, mode === 'query' ? 'shared' : 'exclusive', hdd, ref.format === 'ploop');
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
