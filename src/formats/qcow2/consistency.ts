// qemu-img check as the gate before a change: damage refuses, leaks are counted (harmless, repairable in place).
import { ImageInvalid } from '../../util/errors.js';
import { check } from './qemu-img.js';

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
