// Host-side chores shared by merge, convert and compact: ownership, qcow2 image-opts and checks.
import { chownSync, chmodSync, statSync } from 'node:fs';
import { ImageInvalid } from '../util/errors.js';
import { check } from '../formats/qcow2/qemu-img.js';

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

export interface Consistency {
  /** Clusters allocated but unused, as an interrupted write leaves them: harmless, and repairable in place. */
  leaks: number;
  warnings: string[];
}

/** Refuses an image qemu-img finds damaged: deleting snapshots or discarding rewrites refcounts, which must be right first. */
export async function requireConsistentQcow2(path: string): Promise<Consistency> {
  const result = await check(path, 'qcow2');
  if (result.corruptions > 0 || result.checkErrors > 0) {
    throw new ImageInvalid(
      `The qcow2 image "${path}" has ${result.corruptions} corruption(s)${result.checkErrors > 0 ? ` and ${result.checkErrors} check error(s)` : ''}; repair it with "qemu-img check -r all -f qcow2 ${path}" (after a backup) and try again`,
    );
  }
  const warnings = result.leaks > 0 ? [`${path} has ${result.leaks} leaked cluster(s) (harmless; "qemu-img check -r leaks" frees them).`] : [];
  return { leaks: result.leaks, warnings };
}
