// The qemu-img subcommands that change or create images, typed: the format of every file named, progress
// (`-p`) wired in one place, and the steps that must not be torn (a resize killed halfway leaks clusters)
// marked untorn. Callers never build qemu-img argument lists themselves.
import { qemuImg, parseProgress, repairLeaks, type QemuFormat } from './qemu-img.js';
import { Interrupted, ToolError } from '../../util/errors.js';
import { shielded } from '../../util/cancel.js';

export type OnFraction = (fraction: number) => void;

function progressLines(onFraction: OnFraction): { onStdoutLine: (line: string) => void } {
  return {
    onStdoutLine: (line) => {
      const fraction = parseProgress(line);
      if (fraction !== undefined) onFraction(fraction);
    },
  };
}

/** A new qcow2 file over `backing` (a file, or a json: name of our own for a ploop chain), its format recorded. */
export async function createOverlayFile(path: string, backing: string, backingFormat: QemuFormat, options: { sizeBytes?: number; clusterBytes?: number } = {}): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing];
  if (options.clusterBytes !== undefined) args.push('-o', `cluster_size=${options.clusterBytes}`);
  args.push(path);
  if (options.sizeBytes !== undefined) args.push(String(options.sizeBytes));
  await qemuImg(args, { timeoutMs: 60_000 });
}

/** Changes the virtual size; `preallocate` allocates the new space (a plain image stays plain). */
export async function resizeQcow2(path: string, toBytes: number, options: { shrink: boolean; preallocate: boolean }): Promise<void> {
  const args = ['resize', '-f', 'qcow2'];
  if (options.shrink) args.push('--shrink');
  if (options.preallocate) args.push('--preallocation=falloc');
  args.push(path, String(toBytes));
  // A resize killed halfway leaks the clusters of its new tables: let it finish, the caller rolls back or reruns.
  await qemuImg(args, { timeoutMs: 60 * 60_000, untorn: true });
}

/** Commits an overlay into its backing file, keeping the overlay's data (-d) so that an interrupted commit can run again. */
export async function commitOverlay(overlayPath: string, onFraction: OnFraction): Promise<void> {
  await qemuImg(['commit', '-f', 'qcow2', '-d', '-p', overlayPath], progressLines(onFraction));
}

/** Commits the layers above `baseName` (as named in the chain) into it; -b implies -d, so `top` keeps showing the same content. */
export async function commitChainInto(top: string, baseName: string, onFraction: OnFraction): Promise<void> {
  await qemuImg(['commit', '-f', 'qcow2', '-t', 'writeback', '-p', '-b', baseName, top], progressLines(onFraction));
}

/**
 * Runs `job`, a qemu-img run that writes into `path` and is too long to wait for when the user interrupts: killed
 * amid its writes, it leaves clusters of `path` allocated that nothing uses (qcow2 writes a refcount before the
 * table that uses it, so a kill leaves leaks and nothing worse). They are freed, even though the user interrupted,
 * before the interruption goes on, so the file is left as clean as it was.
 */
export async function freeingLeaksIfInterrupted(path: string, job: () => Promise<void>): Promise<void> {
  try {
    await job();
  } catch (error) {
    if (error instanceof Interrupted) await shielded(() => repairLeaks(path));
    throw error;
  }
}

/**
 * Makes `top` standalone in place: copies every cluster it reads from its backing chain into it, then clears its
 * backing name (the last header write). The lower layers are only read; killed before the end, `top` still has
 * its chain and shows the same content.
 */
export async function pullUpChain(top: string, onFraction: OnFraction): Promise<void> {
  await qemuImg(['rebase', '-f', 'qcow2', '-F', 'qcow2', '-t', 'writeback', '-p', '-b', '', top], progressLines(onFraction));
}

/** Copies a standalone qcow2 image into a new qcow2 file with the given creation options. */
export async function convertQcow2(source: string, target: string, createOptions: string, onFraction: OnFraction): Promise<void> {
  // The default cache mode (unsafe) is fine for a new file: the caller fsyncs and checks it before using it.
  await qemuImg(['convert', '-p', '-f', 'qcow2', '-O', 'qcow2', '-o', createOptions, source, target], progressLines(onFraction));
}

/** Host bytes a qcow2 copy of `path` with these creation options needs (qemu-img measure). */
export async function measureQcow2Copy(path: string, createOptions: string): Promise<number> {
  const out = JSON.parse(await qemuImg(['measure', '--output=json', '-f', 'qcow2', '-O', 'qcow2', '-o', createOptions, path], { timeoutMs: 30 * 60_000 })) as Record<string, unknown>;
  if (typeof out.required !== 'number') throw new ToolError('tool-failed', `qemu-img measure gave no required size for "${path}".`);
  return out.required;
}

/** A qcow2 file named for --image-opts (qemu-img snapshot has no -f): the format is never probed. */
export function qcow2ImageOpts(path: string): string {
  // QemuOpts escapes a comma by doubling it.
  return `driver=qcow2,file.driver=file,file.filename=${path.replace(/,/g, ',,')}`;
}

/**
 * Deletes one internal snapshot. qemu-img snapshot -d finds a snapshot by NAME only (qemu 7.2
 * bdrv_snapshot_find); the caller deletes in table order so the first match is the intended one. Untorn:
 * killing qemu-img amid a deletion leaks clusters.
 */
export async function deleteSnapshot(path: string, name: string): Promise<void> {
  await qemuImg(['snapshot', '--image-opts', '-d', name, qcow2ImageOpts(path)], { timeoutMs: 60 * 60_000, untorn: true });
}
