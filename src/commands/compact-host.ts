// Host-side helpers of compact: the throwaway overlay, ranged discards through qemu-io, the qcow2 tail.
import { accessSync, constants, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '../util/exec.js';
import { onExit } from '../util/cancel.js';
import { removeIfExists, tempPathBeside, fsyncPath } from '../util/atomic.js';
import { check, qemuImg, type QemuFormat } from '../formats/qcow2/qemu-img.js';
import type { Range } from './compact-ranges.js';

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
    await qemuImg(['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing, '-o', `cluster_size=${clusterBytes}`, path], { timeoutMs: 60_000 });
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
 * Discards byte ranges of the guest disk through qemu-io with unmap allowed: qcow2 drops the clusters (or
 * marks them zero over a backing file) and punches the freed host clusters out of the file.
 */
export async function discardRanges(path: string, format: QemuFormat, ranges: readonly Range[]): Promise<void> {
  if (ranges.length === 0) return;
  const commands = ranges.flatMap((r) => ['-c', `discard -q ${r.start} ${r.length}`]);
  // qemu-io takes QEMU's write lock, so a VM that started meanwhile makes this fail instead of racing.
  await run('qemu-io', ['-f', format, '-d', 'unmap', ...commands, path], { timeoutMs: 30 * 60_000 });
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
