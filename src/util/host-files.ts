// Host facts about files that replace one another: ownership and mode carried over, same filesystem for rename.
import { chownSync, chmodSync, statSync } from 'node:fs';

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
