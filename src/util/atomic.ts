// Crash-safe file replacement and temporary names beside an image.
import { openSync, writeSync, fsyncSync, fstatSync, closeSync, renameSync, unlinkSync, readdirSync, lstatSync, constants } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { identityOf, stillNames } from './safe-file.js';
import { ToolError } from './errors.js';

/** A unique, recognisable name in the same folder (same filesystem, so rename is atomic). */
export function tempPathBeside(path: string, purpose: string): string {
  return join(dirname(path), `.${basename(path)}.${purpose}-${randomBytes(4).toString('hex')}.prl-tmp`);
}

/**
 * Temporaries a killed run of ours left beside `image` (tempPathBeside names). Only meaningful while holding
 * the image's exclusive lock: then no live run of ours can own them, and they may be removed.
 */
export function findStaleTemporaries(image: string, purpose: string): string[] {
  const prefix = `.${basename(image)}.${purpose}-`;
  return readdirSync(dirname(image))
    .filter((name) => name.startsWith(prefix) && name.endsWith('.prl-tmp') && /^[0-9a-f]{8}$/.test(name.slice(prefix.length, -'.prl-tmp'.length)))
    .map((name) => join(dirname(image), name));
}

/**
 * Removes the temporaries a killed run of ours left (findStaleTemporaries), regular files only: anything else under
 * such a name (a folder, a FIFO, a link planted there) was not made by us and is left alone; our new temporary
 * gets a fresh name of its own (O_EXCL), so it is in nobody's way.
 */
export function removeStaleTemporaries(image: string, purpose: string): void {
  for (const stale of staleTemporaryFiles(image, purpose)) removeIfExists(stale);
}

/** The stale temporaries that are regular files: the only ones a run may remove (removeStaleTemporaries). */
export function staleTemporaryFiles(image: string, purpose: string): string[] {
  return findStaleTemporaries(image, purpose).filter((stale) => lstatSync(stale, { throwIfNoEntry: false })?.isFile() === true);
}

/**
 * Creates `path` empty, as a new regular file (O_EXCL, never following a link): a temporary that a tool then writes
 * is our file, not whatever was planted under its name.
 */
export function createFresh(path: string): void {
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    throw new ToolError('refused', `"${path}" already exists, though this run chose it as a fresh name; remove it if no other run of this tool is working on the image, then try again. Nothing was changed.`);
  }
}

export function fsyncPath(path: string): void {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function fsyncDirectoryOf(path: string): void {
  fsyncPath(dirname(path));
}

/** Renames over `target`, then makes both the data and the new name durable. */
export function commitRename(source: string, target: string): void {
  fsyncPath(source);
  renameSync(source, target);
  fsyncDirectoryOf(target);
}

/**
 * Writes the whole file under a temporary name, fsyncs it, renames it over `path`, fsyncs the folder. With
 * `replacing` (the identity of the file `path` held when it was read), the name is checked right before the rename:
 * if it now holds another file, nothing is replaced. Returns the new file's identity.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644, replacing?: string): string {
  const temp = tempPathBeside(path, 'write');
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
    if (replacing !== undefined && !stillNames(path, replacing)) {
      throw new ToolError('refused', `"${path}" is no longer the file that was read (it was replaced meanwhile), so it was not overwritten; find out who changes the image's folder, then run the command again.`);
    }
  } catch (error) {
    closeSync(fd);
    unlinkSync(temp);
    throw error;
  }
  const identity = identityOf(fstatSync(fd));
  closeSync(fd);
  renameSync(temp, path);
  fsyncDirectoryOf(path);
  return identity;
}

export function removeIfExists(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
