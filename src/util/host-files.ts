// Host facts about files that replace one another: what the file carried (owner, mode, extended attributes,
// ACLs) carried over, same filesystem for rename; and whether a file may be accessed.
import { accessSync, chownSync, chmodSync, statSync } from 'node:fs';
import { CommandFailed, run } from './exec.js';

/**
 * Every extended attribute of `path` the host lets us read, as getfattr names and encodes them: user., trusted.
 * (as root), security. (an SELinux label) and system.posix_acl_access / _default (the POSIX ACLs). Node has no
 * xattr call; the Debian `attr` tools do it (docs/merge-convert.md, "What a replaced file keeps").
 */
async function readAttributes(path: string): Promise<{ name: string; value: string }[]> {
  let stdout: string;
  try {
    // -m - matches every namespace (the default is user. only); -e base64 keeps binary values intact.
    ({ stdout } = await run('getfattr', ['--absolute-names', '--dump', '--match=-', '--encoding=base64', '--', path], { timeoutMs: 60_000 }));
  } catch (error) {
    // A filesystem without extended attributes has none to keep.
    if (error instanceof CommandFailed && /Operation not supported/.test(error.stderr)) return [];
    throw error;
  }
  return stdout
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => ({ name: line.slice(0, line.indexOf('=')), value: line.slice(line.indexOf('=') + 1) }));
}

/**
 * Gives `target` what `model` carried, so that a file replacing another looks the same to the VM manager and to
 * the host's security policy: owner, extended attributes and ACLs, then mode (last: chown clears set-id bits).
 */
export async function carryOver(model: string, target: string): Promise<void> {
  const stat = statSync(model);
  if (process.getuid?.() === 0) chownSync(target, stat.uid, stat.gid);
  for (const { name, value } of await readAttributes(model)) {
    await run('setfattr', ['--name', name, '--value', value, '--', target], { timeoutMs: 60_000 });
  }
  chmodSync(target, stat.mode & 0o7777);
}

/** True when both paths live on the same filesystem, so that a rename between them is atomic. */
export function sameFilesystem(a: string, b: string): boolean {
  return statSync(a).dev === statSync(b).dev;
}

/** True when this process may access `path` as `mode` asks (fs.constants.W_OK, X_OK, ...). */
export function accessible(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}
