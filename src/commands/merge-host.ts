// Host-side facts and chores shared by merge and convert: allocation, free space, ownership, qcow2 image-opts.
import { chownSync, chmodSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ImageInvalid, ToolError } from '../util/errors.js';
import { check } from '../formats/qcow2/qemu-img.js';
import { formatBytes } from '../util/units.js';
import { debug } from '../util/log.js';

/** Bytes the file occupies on the host (st_blocks), which is what "freed space" means to an admin. */
export function hostAllocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/** Bytes an unprivileged writer may still allocate in the filesystem holding `path`. */
export function freeBytesAt(path: string): number {
  const fs = statfsSync(path);
  return fs.bavail * fs.bsize;
}

/** Margin kept free on top of an estimate: qemu-img's own metadata growth and the filesystem's. */
export function spaceMargin(bytes: number): number {
  return Math.max(16 * 1024 * 1024, Math.ceil(bytes / 100));
}

/** Refuses, before anything changes, when the folder of `path` cannot hold `neededBytes` more. */
export function requireFreeSpace(path: string, neededBytes: number, what: string): void {
  const free = freeBytesAt(dirname(path));
  const wanted = neededBytes + spaceMargin(neededBytes);
  debug(`free space in ${dirname(path)}: ${free} bytes; ${what} needs up to ${wanted}`);
  if (free < wanted) {
    throw new ToolError(
      'no-space',
      `Not enough free space in ${dirname(path)}: ${what} needs up to ${formatBytes(wanted)}, but only ${formatBytes(free)} is free; free some space and try again. Nothing was changed.`,
    );
  }
}

/** Gives `target` the mode and owner of `model`, so that a file replacing another looks the same to the VM manager. */
export function copyOwnership(model: string, target: string): void {
  const stat = statSync(model);
  chmodSync(target, stat.mode & 0o7777);
  if (process.getuid?.() === 0) chownSync(target, stat.uid, stat.gid);
}

/** True when both paths live on the same filesystem, so that a rename between them is atomic. */
export function sameFilesystem(a: string, b: string): boolean {
  return statSync(a).dev === statSync(b).dev;
}

/**
 * Temporaries a killed run of ours left beside `image` (tempPathBeside names). Only meaningful while holding
 * the image's exclusive lock: then no live run of ours can own them, and they may be removed.
 */
export function findStaleTemporaries(image: string, purpose: string): string[] {
  const prefix = `.${basename(image)}.${purpose}-`;
  return readdirSync(dirname(image))
    .filter((name) => name.startsWith(prefix) && name.endsWith('.prl-tmp') && /^[0-9a-f]{8}$/.test(name.slice(prefix.length, -'.prl-tmp'.length)))
    .map((name) => join(dirname(image), name));
}

/** A qcow2 file named for --image-opts (qemu-img snapshot has no -f): the format is never probed. */
export function qcow2ImageOpts(path: string): string {
  // QemuOpts escapes a comma by doubling it.
  return `driver=qcow2,file.driver=file,file.filename=${path.replace(/,/g, ',,')}`;
}

/** Refuses an image qemu-img finds damaged: deleting snapshots rewrites refcounts, which must be right first. */
export async function requireConsistentQcow2(path: string): Promise<string[]> {
  const result = await check(path, 'qcow2');
  if (result.corruptions > 0 || result.checkErrors > 0) {
    throw new ImageInvalid(
      `The qcow2 image "${path}" has ${result.corruptions} corruption(s)${result.checkErrors > 0 ? ` and ${result.checkErrors} check error(s)` : ''}; repair it with "qemu-img check -r all -f qcow2 ${path}" (after a backup) and try again`,
    );
  }
  return result.leaks > 0 ? [`${path} has ${result.leaks} leaked cluster(s) (harmless; "qemu-img check -r leaks" frees them).`] : [];
}
