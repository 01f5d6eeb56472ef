// Advisory image locks with flock(): shared for queries, exclusive for changes, never waiting.
import { openSync, closeSync, constants } from 'node:fs';
import fsExt from 'fs-ext';
import { ToolError } from './errors.js';

export type LockMode = 'shared' | 'exclusive';

export interface HeldLock {
  readonly path: string;
  release(): void;
}

/**
 * Takes a non-blocking flock on `lockPath`. A shared lock only needs read access, so --info works on
 * a read-only image; `create` makes the file (ploop's DiskDescriptor.xml.lck) when it is missing.
 */
export function acquireLock(lockPath: string, mode: LockMode, displayPath: string, create = false): HeldLock {
  let fd: number;
  try {
    fd = create
      ? openSync(lockPath, constants.O_RDONLY | constants.O_CREAT, 0o600)
      : openSync(lockPath, constants.O_RDONLY);
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
