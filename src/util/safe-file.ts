// Opening a file an image names, without letting it block, follow a link or be something other than a
// regular file: a FIFO would hang a plain open(), a device would hand host bytes to the tool.
import { closeSync, constants, fstatSync, lstatSync, openSync, type Stats } from 'node:fs';
import { readFully } from './file-io.js';

export type FileProblem = 'missing' | 'not-regular' | 'symlink' | 'permission' | 'other';

export class FileRefused extends Error {
  constructor(readonly problem: FileProblem, readonly path: string, readonly detail: string) {
    super(`${path}: ${detail}`);
    this.name = 'FileRefused';
  }
}

function describeKind(stats: Stats): string {
  if (stats.isFIFO()) return 'a named pipe (FIFO)';
  if (stats.isSocket()) return 'a socket';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isDirectory()) return 'a folder';
  return 'not a regular file';
}

/**
 * Opens `path` read-only, but only after lstat shows a regular file: a device, FIFO or socket is never opened at
 * all (opening some devices has effects: a watchdog arms itself). The open itself uses O_NONBLOCK (a FIFO swapped
 * in meanwhile opens at once instead of waiting for a writer) and O_NOFOLLOW (a symlink swapped in fails), and
 * fstat then checks that the opened file is the one lstat saw. Returns the fd and its stats; the caller closes it.
 * `write` opens it read-write: only for a file the operation will change.
 */
export function openRegularFile(path: string, options: { write?: boolean } = {}): { fd: number; stats: Stats } {
  let seen: Stats;
  let fd: number;
  try {
    seen = lstatSync(path);
    if (seen.isSymbolicLink()) throw new FileRefused('symlink', path, 'it is a symbolic link');
    if (!seen.isFile()) throw new FileRefused('not-regular', path, `it is ${describeKind(seen)}`);
    fd = openSync(path, (options.write === true ? constants.O_RDWR : constants.O_RDONLY) | constants.O_NONBLOCK | constants.O_NOFOLLOW | constants.O_NOCTTY);
  } catch (error) {
    if (error instanceof FileRefused) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new FileRefused('missing', path, 'it does not exist');
    if (code === 'ELOOP') throw new FileRefused('symlink', path, 'it is a symbolic link');
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw new FileRefused('permission', path, code === 'EROFS' ? 'it is on a read-only filesystem' : 'permission denied');
    throw new FileRefused('other', path, (error as Error).message);
  }
  const stats = fstatSync(fd);
  if (!stats.isFile() || stats.dev !== seen.dev || stats.ino !== seen.ino) {
    closeSync(fd);
    throw new FileRefused('not-regular', path, 'it changed while it was being opened');
  }
  return { fd, stats };
}

/** A file's identity as a comparable string: two names with the same one are the same file. */
export function identityOf(stats: Pick<Stats, 'dev' | 'ino'>): string {
  return `${stats.dev}:${stats.ino}`;
}

/**
 * Right before a rename or unlink of `path`: the name must still be the file that was validated (lstat, so a
 * symlink swapped in is caught too). Returns false when the name is gone or now names another file.
 */
export function stillNames(path: string, identity: string): boolean {
  try {
    return identityOf(lstatSync(path)) === identity;
  } catch {
    return false;
  }
}

/** Stats and the first `length` bytes of a regular file opened as openRegularFile() does. */
export function readRegularFileHead(path: string, length: number): { stats: Stats; head: Buffer } {
  const { fd, stats } = openRegularFile(path);
  try {
    return { stats, head: readFully(fd, Math.min(length, stats.size), 0) };
  } finally {
    closeSync(fd);
  }
}
