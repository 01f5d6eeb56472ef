// Crash-safe file replacement and temporary names beside an image.
import { openSync, writeSync, fsyncSync, closeSync, renameSync, unlinkSync, readdirSync, constants } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

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

/** Writes the whole file under a temporary name, fsyncs it, renames it over `path`, fsyncs the folder. */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  const temp = tempPathBeside(path, 'write');
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temp);
    throw error;
  }
  closeSync(fd);
  renameSync(temp, path);
  fsyncDirectoryOf(path);
}

export function removeIfExists(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
