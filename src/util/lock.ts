// Advisory image locks with flock(): shared for queries, exclusive for changes, never waiting.
import { openSync, closeSync, fstatSync, constants } from 'node:fs';
import fsExt from 'fs-ext';
import { ToolError } from './errors.js';

export type LockMode = 'shared' | 'exclusive';

export interface HeldLock {
  readonly path: string;
  release(): void;
}

/**
 * Opens read-only, never following a symlink (a planted DiskDescriptor.xml.lck link would make us create its
 * target elsewhere) and never blocking (a FIFO). A lock file that must be created but cannot be (read-only
 * folder) is then opened as is.
 */
function openForLock(lockPath: string, create: boolean): number {
  const flags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  let fd: number;
  if (!create) fd = openSync(lockPath, flags);
  else {
    try {
      fd = openSync(lockPath, flags | constants.O_CREAT, 0o600);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EROFS') throw error;
      fd = openSync(lockPath, flags);
    }
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
  }
  return fd;
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
    if (code === 'ELOOP' || code === 'ENOTREG') {
      throw new ToolError('refused', `The lock file "${lockPath}" is ${code === 'ELOOP' ? 'a symbolic link' : 'not a regular file'}; a lock file is always a plain file beside the image. Remove it and try again. Nothing was changed.`);
    }
    throw new ToolError('invalid-path', `Cannot open "${lockPath}" to lock it: ${(error as Error).message}.`);
  }
  try {
    fsExt.flockSync(fd, mode === 'shared' ? 'shnb' : 'exnb');
  } catch (error) {
    closeSync(fd);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
      throw new ToolError(
        'locked',
        `The specified disk image "${displayPath}" is locked by another process. Wait for it to finish and try again; "fuser -v ${lockPath}" shows which process holds the lock.`,
      );
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
