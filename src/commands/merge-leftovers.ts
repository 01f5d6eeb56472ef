// merge --external writes its intermediates down before the merged base takes the top's name. A run killed
// between that rename and their removal leaves files that nothing references any more; the note lets the next
// run (the documented recovery) remove them instead of leaving them forever.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { findStaleTemporaries, fsyncDirectoryOf, tempPathBeside } from '../util/atomic.js';
import { writeFully } from '../util/file-io.js';

const PURPOSE = 'merge-leftovers';

export interface Leftovers {
  /** Notes found beside the top (ours: tempPathBeside names). */
  notes: string[];
  /** Files the notes name that still exist. */
  paths: string[];
  /** Notes that could not be read: they are removed, the files they might name are left alone. */
  unreadable: string[];
}

function namedIn(note: string): string[] | undefined {
  try {
    const parsed = JSON.parse(readFileSync(note, 'utf8')) as { intermediates?: unknown };
    const list = parsed.intermediates;
    if (!Array.isArray(list) || !list.every((p): p is string => typeof p === 'string' && isAbsolute(p))) return undefined;
    return list;
  } catch {
    return undefined;
  }
}

/** What an interrupted run left beside `top`; call it holding the top's exclusive lock. */
export function findLeftovers(top: string): Leftovers {
  const notes = findStaleTemporaries(top, PURPOSE);
  const named = notes.map((note) => ({ note, paths: namedIn(note) }));
  return {
    notes,
    paths: [...new Set(named.flatMap((n) => n.paths ?? []))].filter((path) => path !== top && existsSync(path)),
    unreadable: named.filter((n) => n.paths === undefined).map((n) => n.note),
  };
}

/** Where this run writes its note (a fresh name, so that a stale note is never overwritten half-way). */
export function newLeftoversNote(top: string): string {
  return tempPathBeside(top, PURPOSE);
}

/**
 * Writes the note in one write() to its fresh name, then fsyncs it and the folder. No temporary: a kill cannot
 * tear a single small write, and a note emptied by a power cut reads as unreadable (removed, files left alone).
 */
export function writeLeftoversNote(note: string, intermediates: readonly string[]): void {
  const fd = openSync(note, 'wx', 0o600);
  try {
    writeFully(fd, Buffer.from(`${JSON.stringify({ intermediates })}\n`, 'utf8'), 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  fsyncDirectoryOf(note);
}
