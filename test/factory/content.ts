// Deterministic file trees (contents derived from a seed and the path) and sha256 of every regular file under a mount.
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

const MiB = 1024 * 1024;

export interface PlannedFile {
  path: string;
  sizeBytes: number;
}

/**
 * The kept files for `filesMiB` of data: odd sizes around page and block boundaries, names with spaces,
 * nested folders, and the bulk split over a few larger files.
 */
export function planFiles(filesMiB: number): PlannedFile[] {
  const small: PlannedFile[] = [
    { path: 'empty file', sizeBytes: 0 },
    { path: 'one byte.txt', sizeBytes: 1 },
    { path: 'page minus one.bin', sizeBytes: 4095 },
    { path: 'dir one/page plus one.bin', sizeBytes: 4097 },
    { path: 'dir one/nested deeper/file with spaces.dat', sizeBytes: 65_537 },
    { path: 'docs/readme', sizeBytes: 12_345 },
  ];
  const smallBytes = small.reduce((sum, f) => sum + f.sizeBytes, 0);
  const bulkBytes = Math.max(0, Math.round(filesMiB * MiB) - smallBytes);
  const parts = Math.max(1, Math.min(4, Math.floor(filesMiB / 4)));
  const bulk: PlannedFile[] = [];
  let left = bulkBytes;
  for (let i = 0; i < parts && left > 0; i++) {
    // Halving sizes, last one takes the remainder; the -i keeps sizes off cluster boundaries.
    const size = i === parts - 1 ? left : Math.max(1, Math.floor(left / 2) - i * 511);
    bulk.push({ path: `data/bulk ${i}.bin`, sizeBytes: size });
    left -= size;
  }
  return [...small, ...bulk];
}

/** Files written and then deleted, so that the image holds stale data for compact to reclaim. */
export function planDeleted(deletedMiB: number): PlannedFile[] {
  const out: PlannedFile[] = [];
  let left = Math.round(deletedMiB * MiB);
  for (let i = 0; left > 0; i++) {
    const size = Math.min(left, 16 * MiB);
    out.push({ path: `to delete/chunk ${i}.bin`, sizeBytes: size });
    left -= size;
  }
  return out;
}

/** Pseudo-random bytes from AES-128-CTR keyed by (seed, path): fast, incompressible, reproducible. */
function keystream(seed: number, path: string): (length: number) => Buffer {
  const key = createHash('sha256').update(`prl-factory:${seed}:${path}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return (length) => cipher.update(Buffer.alloc(length));
}

/** Writes the files under `root` (fsync each) and returns path -> sha256. */
export async function writeFiles(root: string, files: PlannedFile[], seed: number): Promise<Record<string, string>> {
  const sums: Record<string, string> = {};
  for (const file of files) {
    const target = join(root, file.path);
    await mkdir(dirname(target), { recursive: true });
    const next = keystream(seed, file.path);
    const hash = createHash('sha256');
    const fd = openSync(target, 'w');
    try {
      for (let done = 0; done < file.sizeBytes; ) {
        const chunk = next(Math.min(MiB, file.sizeBytes - done));
        hash.update(chunk);
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
        done += chunk.length;
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    sums[file.path] = hash.digest('hex');
  }
  return sums;
}

/** Removes the top folders of the given files (used for the deleted data). */
export async function removeFiles(root: string, files: PlannedFile[]): Promise<void> {
  const tops = new Set(files.map((f) => f.path.split('/')[0]!));
  for (const top of tops) await rm(join(root, top), { recursive: true, force: true });
}

/** Names the filesystem itself keeps at the root; not user files. */
const FS_OWN = new Set(['lost+found']);

/** sha256 of every regular file under `mountpoint`, keyed by the '/'-separated path relative to it. */
export function sha256Tree(mountpoint: string): Record<string, string> {
  const out: Record<string, string> = {};
  const buffer = Buffer.alloc(MiB);
  const walk = (dir: string, rel: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const relPath = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (rel === '' && FS_OWN.has(entry.name) && entry.isDirectory()) continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full, relPath);
      else if (entry.isFile()) {
        const hash = createHash('sha256');
        const fd = openSync(full, 'r');
        try {
          for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0; ) hash.update(buffer.subarray(0, n));
        } finally {
          closeSync(fd);
        }
        out[relPath] = hash.digest('hex');
      }
    }
  };
  walk(mountpoint, '');
  return out;
}

/** Every difference between expected and actual sums, one sentence each. */
export function compareSums(expected: Record<string, string>, actual: Record<string, string>, allowExtra: boolean): string[] {
  const problems: string[] = [];
  for (const [path, sum] of Object.entries(expected)) {
    if (!(path in actual)) problems.push(`file "${path}" is missing`);
    else if (actual[path] !== sum) problems.push(`file "${path}" has sha256 ${actual[path]}, expected ${sum}`);
  }
  if (!allowExtra) {
    for (const path of Object.keys(actual)) if (!(path in expected)) problems.push(`unexpected file "${path}"`);
  }
  return problems;
}
