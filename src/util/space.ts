// Host space: what a file occupies, what its filesystem has free, and the refusal when that is not enough.
import { statSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { ToolError } from './errors.js';
import { formatBytes, MiB } from './units.js';
import { debug } from './log.js';

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
  return Math.max(16 * MiB, Math.ceil(bytes / 100));
}

/**
 * The one free-space rule, pure (planners call it with the free bytes they measured): `neededBytes` plus the
 * margin must fit in `freeBytes` of `folder`, or the command refuses before anything changes.
 */
export function requireSpace(folder: string, freeBytes: number, neededBytes: number, what: string): void {
  const wanted = neededBytes + spaceMargin(neededBytes);
  debug(`free space in ${folder}: ${freeBytes} bytes; ${what} needs up to ${wanted}`);
  if (freeBytes < wanted) {
    throw new ToolError(
      'no-space',
      `Not enough free space in ${folder}: ${what} needs up to ${formatBytes(wanted)}, but only ${formatBytes(freeBytes)} is free; free some space and try again. Nothing was changed.`,
    );
  }
}

/** requireSpace() for the folder of `path`, measured now. */
export function requireFreeSpace(path: string, neededBytes: number, what: string): void {
  requireSpace(dirname(path), freeBytesAt(dirname(path)), neededBytes, what);
}
