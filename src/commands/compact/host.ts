// Host-side helpers of compact: the throwaway overlay, ranged discards through qemu-io, the qcow2 tail.
import { accessSync, constants, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { onExit } from '../../util/cancel.js';
import { removeIfExists, tempPathBeside, fsyncPath } from '../../util/atomic.js';
import { check, type QemuFormat } from '../../formats/qcow2/qemu-img.js';
import { createOverlayFile } from '../../formats/qcow2/changes.js';

function writableFolder(path: string): boolean {
  try {
    accessSync(dirname(path), constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export interface Overlay {
  path: string;
  remove(): void;
}

/**
 * A qcow2 overlay backed by the image (`backing`: a file, or a json: name for a ploop chain): the appliance
 * writes its trims there and the image is only read. It lives beside the image file `beside`; a read-only
 * folder (compact --info needs only read access) puts it in $TMPDIR. The cluster size matches the unit the
 * caller counts in, so a discard covers exactly those clusters.
 */
export async function createOverlay(backing: string, backingFormat: QemuFormat, clusterBytes: number, beside = backing): Promise<Overlay> {
  const path = writableFolder(beside)
    ? tempPathBeside(beside, 'compact-overlay')
    : join(tmpdir(), `.${basename(beside)}.compact-overlay-${randomBytes(4).toString('hex')}.prl-tmp`);
  const remove = (): void => removeIfExists(path);
  const unregister = onExit(remove);
  try {
    await createOverlayFile(path, backing, backingFormat, { clusterBytes });
  } catch (error) {
    unregister();
    remove();
    throw error;
  }
  return {
    path,
    remove() {
      unregister();
      remove();
    },
  };
}

/**
 * QEMU never shortens a qcow2 file: the clusters freed at its end stay as holes. Cutting the file at the
 * end of the last cluster in use (qemu-img check's image-end-offset) is safe, because qcow2 allocates by
 * its refcounts and appends past the end. Returns the bytes cut off the apparent size.
 */
export async function truncateQcow2Tail(path: string): Promise<number> {
  const { imageEndOffset, corruptions } = await check(path, 'qcow2');
  const size = statSync(path).size;
  if (corruptions > 0 || imageEndOffset <= 0 || imageEndOffset >= size) return 0;
  truncateSync(path, imageEndOffset);
  // The new length lives in the file's inode: fsync the file itself (the folder's entry does not change).
  fsyncPath(path);
  return size - imageEndOffset;
}
