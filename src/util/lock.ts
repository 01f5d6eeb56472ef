// Advisory image locks with flock(): shared for queries, exclusive for changes, never waiting.
import { openSync, closeSync, constants } from 'node:fs';
import fsExt from 'fs-ext';
import { ToolError } from './errors.js';

export type LockMode = 'shared' | 'exclusive';

export interface HeldLock {
  readonly path: string;
  release(): void;
}

/** Opens read-only; a lock file that must be created but cannot be (read-only folder) is then opened as is. */
function openForLock(lockPath: string, create: boolean): number {
  if (!create) return openSync(lockPath, constants.O_RDONLY);
  try {
    return openSync(lockPath, constants.O_RDONLY | constants.O_CREAT, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EROFS') return openSync(lockPath, constants.O_RDONLY);
    throw error;
  }
}

/**
 * Takes a non-blocking flock on `lockPath`. A shared lock only needs read access, so --info works on
 * a read-only image; `create` makes the file (ploop's DiskDescriptor.xml.lck) when it is missing.
 */
export function acquireLock(lockPath: string, mode: LockMode, displayPath: string, create = false): HeldLock {
  let fd: number;
  try {
    fd = openForLock(lockPath, create);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EROFS') {
      throw new ToolError('refused', `Cannot open "${lockPath}" to lock it (${code}); run as a user who can read the image.`);
    }
    throw new ToolError('invalid-path', `Cannot open "${lockPath}" to lock it: ${(error as Error).message}.`);
  }
  try {
    fsExt.flockSync(fd, mode === 'shared' ? 'shnb' : 'exnb');
  } catch (error) {
    closeSync(fd);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
      throw new ToolError('locked', `The specified disk image "${displayPath}" is locked by another process`);
    }
    throw error;
  }
  let held = true;
  return {
    path: lockPath,
    release() {
      if (!held) return;
      held = false;
      closeSync(fd);
    },
  };
}
