// merge --external removes its intermediates after the merged image took the top's name. A run killed between
// that rename and their removal leaves files that nothing references any more; the note lets the next run (the
// documented recovery) remove them. A note is a file in a folder the tenant controls, so it is trusted only when
// it proves it was written by us for this very image (the identity the top has after the rename: device, inode
// and name), and only the plain names it lists, each a regular, singly linked file in the top's own folder, are
// acted on. Anything else is ignored with a warning and left where it is: nothing outside the folder is touched.
// The one exception is a note with our name for this top that holds no JSON at all (a power cut while it was
// written: found by the power-loss simulation of ploop merge); it names nothing, and the run removes it.
import { closeSync, constants, fstatSync, fsyncSync, lstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { findStaleTemporaries, fsyncDirectoryOf, tempPathBeside } from '../../util/atomic.js';
import { writeFully } from '../../util/file-io.js';

const PURPOSE = 'merge-leftovers';
const WRITER = 'prl-disk-tool merge --external';
const VERSION = 2;
/** A note is a few names; anything larger is not ours and is not read whole. */
const MAX_NOTE_BYTES = 64 * 1024;

export interface Leftovers {
  /** Our notes for this top (stale ones included): removed by the run that acts on them or supersedes them. */
  notes: string[];
  /** Files the proven notes name that still exist, each inside the top's folder. */
  paths: string[];
  /** One sentence per note or name that was ignored, and why; nothing they name is touched. */
  warnings: string[];
}

interface Identity {
  name: string;
  dev: string;
  ino: string;
}

interface NoteBody {
  writer: string;
  version: number;
  top: Identity;
  intermediates: string[];
}

function identityOf(path: string, name: string): Identity {
  const stat = statSync(path, { bigint: true });
  return { name, dev: String(stat.dev), ino: String(stat.ino) };
}

function isPlainName(name: unknown): name is string {
  return typeof name === 'string' && name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

/** A note file that holds no JSON: what a power cut leaves of a note being written (empty, cut short, zeros). */
const TORN = 'torn';

/** The note's body when it is ours (writer, version, shape), TORN, else why it is not ours. */
function readNote(note: string): NoteBody | string {
  let text: string;
  try {
    // O_NOFOLLOW|O_NONBLOCK: a note that is a symlink or a FIFO is not ours, and must neither lead out nor hang.
    const fd = openSync(note, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile() || stat.size > MAX_NOTE_BYTES) return 'it is not a small regular file';
      if (stat.nlink > 1) return 'it has other names (hard links)';
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    return `it cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return TORN;
  }
  // JSON.parse gives null for "null", and a number or a string for those: none has the fields below.
  const body = (parsed ?? {}) as Partial<NoteBody>;
  const top = body.top as Partial<Identity> | undefined;
  if (body.writer !== WRITER || body.version !== VERSION) return 'it was not written by this version of prl_disk_tool';
  if (typeof top?.name !== 'string' || typeof top.dev !== 'string' || typeof top.ino !== 'string') return 'it names no image';
  if (!Array.isArray(body.intermediates)) return 'it lists no images';
  return body as NoteBody;
}

/** The file `name` in `folder` when it may be removed: a regular file with one link, not a symlink, not the top. */
function removable(folder: string, name: unknown, top: string): string | { reason: string } {
  if (!isPlainName(name)) return { reason: `${JSON.stringify(name)} is not a plain file name in the image's folder` };
  const path = join(folder, name);
  if (path === top) return { reason: `${name} is the image itself` };
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat === undefined) return path;
  if (!stat.isFile()) return { reason: `${name} is not a regular file` };
  if (stat.nlink > 1) return { reason: `${name} has other names (hard links)` };
  return path;
}

/**
 * What an interrupted run left beside `top` (an absolute path without symlinks); call it holding the top's exclusive lock.
 * `sameFile: false` is for a caller that proves otherwise that the listed files are no longer the image (ploop merge:
 * the descriptor names them nowhere), so that a copied folder (new inodes) is still cleaned.
 */
export function findLeftovers(top: string, sameFile = true): Leftovers {
  const folder = dirname(top);
  const here = identityOf(top, basename(top));
  const out: Leftovers = { notes: [], paths: [], warnings: [] };
  const ignore = (note: string, why: string): void =>
    void out.warnings.push(`Ignored the note ${note}: ${why}; nothing it names was removed (delete the note if no merge of this image is running).`);
  for (const note of findStaleTemporaries(top, PURPOSE)) {
    const body = readNote(note);
    // A torn note names nothing that could be acted on: the run removes it like a note it has finished with.
    if (body === TORN) {
      out.notes.push(note);
      continue;
    }
    if (typeof body === 'string') {
      ignore(note, body);
      continue;
    }
    if (body.top.name !== here.name) {
      ignore(note, `it was written for another image (${JSON.stringify(body.top.name)})`);
      continue;
    }
    const checked = body.intermediates.map((name) => removable(folder, name, top));
    // One name we would not remove makes the whole note suspect: it is left as it is, and none of its names acted on.
    const refused = checked.find((path): path is { reason: string } => typeof path !== 'string');
    if (refused !== undefined) {
      ignore(note, refused.reason);
      continue;
    }
    out.notes.push(note);
    // Another identity: the run that wrote it stopped before the rename, so its intermediates are still the chain.
    if (sameFile && (body.top.dev !== here.dev || body.top.ino !== here.ino)) continue;
    for (const path of checked as string[]) {
      if (lstatSync(path, { throwIfNoEntry: false }) !== undefined && !out.paths.includes(path)) out.paths.push(path);
    }
  }
  return out;
}

/** Where this run writes its note (a fresh name, so that a stale note is never overwritten half-way). */
export function newLeftoversNote(top: string): string {
  return tempPathBeside(top, PURPOSE);
}

/**
 * Writes the note in one write() to its fresh name, then fsyncs it and the folder. `resultFile` is the file that
 * holds (or will hold, after the rename) the top's name: its identity is what a later run checks. No temporary: a
 * kill cannot tear a single small write, and a note a power cut tore holds no JSON: the next run removes it alone.
 */
export function writeLeftoversNote(note: string, top: string, resultFile: string, intermediates: readonly string[]): void {
  const folder = dirname(top);
  const names = intermediates.map((path) => {
    if (dirname(path) !== folder) throw new Error(`internal: intermediate ${path} outside ${folder}`);
    return basename(path);
  });
  const body: NoteBody = { writer: WRITER, version: VERSION, top: identityOf(resultFile, basename(top)), intermediates: names };
  const fd = openSync(note, 'wx', 0o600);
  try {
    writeFully(fd, Buffer.from(`${JSON.stringify(body)}\n`, 'utf8'), 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  fsyncDirectoryOf(note);
}
