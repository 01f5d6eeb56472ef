// qemu-img check as the gate before a change: damage refuses, leaks are counted (harmless, repairable in place).
import { ImageInvalid } from '../../util/errors.js';
import { check } from './qemu-img.js';

export interface Consistency {
  /** Clusters allocated but unused, as an interrupted write leaves them: harmless, and repairable in place. */
  leaks: number;
  /** OFLAG_COPIED bits an interrupted snapshot deletion left wrong; only with `acceptCopiedFlags`, else refused. */
  copiedFlagErrors: number;
  warnings: string[];
}

/**
 * Refuses an image qemu-img finds damaged: deleting snapshots or discarding rewrites refcounts, which must be right
 * first. `acceptCopiedFlags`: damage that is only wrong OFLAG_COPIED bits is returned instead, for a caller that
 * repairs it as the first step of its plan (merge, whose interrupted snapshot deletion leaves exactly that).
 */
export async function requireConsistentQcow2(path: string, options: { acceptCopiedFlags?: boolean } = {}): Promise<Consistency> {
  const result = await check(path, 'qcow2');
  const onlyFlags = result.corruptions > 0 && result.checkErrors === 0 && result.copiedFlagErrors === result.corruptions;
  if (onlyFlags && !options.acceptCopiedFlags) {
    throw new ImageInvalid(
      `The qcow2 image "${path}" has ${result.corruptions} cluster(s) whose OFLAG_COPIED bit is wrong, what an interrupted snapshot deletion leaves; "prl_disk_tool merge --hdd ${path}" repairs them (or "qemu-img check -r all -f qcow2 ${path}"), then try again`,
    );
  }
  if ((result.corruptions > 0 || result.checkErrors > 0) && !onlyFlags) {
    throw new ImageInvalid(
      `The qcow2 image "${path}" has ${result.corruptions} corruption(s)${result.checkErrors > 0 ? ` and ${result.checkErrors} check error(s)` : ''}; repair it with "qemu-img check -r all -f qcow2 ${path}" (after a backup) and try again`,
    );
  }
  const warnings = result.leaks > 0 ? [`${path} has ${result.leaks} leaked cluster(s) (harmless; "qemu-img check -r leaks" frees them).`] : [];
  return { leaks: result.leaks, copiedFlagErrors: result.corruptions > 0 ? result.copiedFlagErrors : 0, warnings };
}
