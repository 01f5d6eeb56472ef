// Crash states from a recorded run, as a power cut leaves them: the names as of some point after the last folder
// fsync (metadata is journaled in order, so a prefix of the name operations), and for each file what its last
// completed fsync made durable plus, per 512-byte sector, the value after some prefix of the later writes to it.
import { rng } from '../helpers/random.js';
import { closeSync, mkdirSync, openSync, readdirSync, lstatSync, rmSync, ftruncateSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, relative } from 'node:path';
import type { LogOp } from './log.js';

const SECTOR = 512;

/** States per operation (PRL_POWERLOSS_STATES; PRL_POWERLOSS_FULL=1 gives 200, CI's sample is 12). */
export const SAMPLED_STATES = Number(process.env.PRL_POWERLOSS_STATES ?? (process.env.PRL_POWERLOSS_FULL === '1' ? 200 : 12));
/** The seed the states are drawn from (PRL_POWERLOSS_SEED). */
export const SAMPLE_SEED = Number(process.env.PRL_POWERLOSS_SEED ?? 20261130);

type DataOp = { index: number; op: Extract<LogOp, { kind: 'write' | 'truncate' | 'falloc' }> | { kind: 'open-trunc' } };
type NameOp = { index: number; kind: 'create' | 'rename' | 'unlink' | 'link' | 'mkdir' | 'rmdir'; path: string; to?: string; inode?: number };

interface Inode {
  /** The pristine file this inode started as (relative to the root), or undefined for a file the run created. */
  pristine?: string;
  ops: DataOp[];
  /** [begin, end] log indices of the syncs of this inode. */
  syncs: [number, number][];
}

/** The live state of a recorded run, replayed once: which inode every data operation and sync touched. */
export interface Timeline {
  root: string;
  length: number;
  inodes: Inode[];
  /** Name operations in log order. */
  names: NameOp[];
  /** Folder syncs and whole-filesystem syncs as [begin, end]. */
  folderSyncs: [number, number][];
  pristineNames: Map<string, number>;
  pristineDirs: string[];
  /** Log indices of sync ends, renames and unlinks: the moments where a cut tests the most. */
  marks: number[];
}

export function timeline(ops: readonly LogOp[], root: string, pristineDir: string): Timeline {
  const inodes: Inode[] = [];
  const live = new Map<string, number>();
  const pristineNames = new Map<string, number>();
  const pristineDirs: string[] = [];
  const walk = (folder: string): void => {
    for (const name of readdirSync(folder).sort()) {
      const path = join(folder, name);
      const key = relative(pristineDir, path);
      if (lstatSync(path).isDirectory()) {
        pristineDirs.push(key);
        walk(path);
      } else {
        inodes.push({ pristine: key, ops: [], syncs: [] });
        pristineNames.set(key, inodes.length - 1);
        live.set(key, inodes.length - 1);
      }
    }
  };
  walk(pristineDir);
  const names: NameOp[] = [];
  const folderSyncs: [number, number][] = [];
  const marks: number[] = [];
  const openSyncs = new Map<string, number>();
  const rel = (path: string): string => relative(root, path);
  const dirs = new Set(pristineDirs.concat(''));
  const inodeOf = (path: string, index: number): number => {
    let id = live.get(rel(path));
    if (id === undefined) {
      // A file that existed before the shim saw it being created (cannot happen for files under the root).
      throw new Error(`power-loss replay: operation ${index} touches ${path}, which the replay does not know`);
    }
    return id;
  };
  ops.forEach((op, index) => {
    switch (op.kind) {
      case 'write':
      case 'truncate':
      case 'falloc':
        inodes[inodeOf(op.path, index)]!.ops.push({ index, op });
        break;
      case 'open-trunc':
        inodes[inodeOf(op.path, index)]!.ops.push({ index, op: { kind: 'open-trunc' } });
        break;
      case 'create': {
        inodes.push({ ops: [], syncs: [] });
        live.set(rel(op.path), inodes.length - 1);
        names.push({ index, kind: 'create', path: rel(op.path), inode: inodes.length - 1 });
        break;
      }
      case 'rename': {
        const id = live.get(rel(op.from));
        if (id === undefined) {
          if (!dirs.has(rel(op.from))) throw new Error(`power-loss replay: rename of unknown ${op.from}`);
          throw new Error('power-loss replay: folder renames are not modelled');
        }
        live.delete(rel(op.from));
        live.set(rel(op.to), id);
        names.push({ index, kind: 'rename', path: rel(op.from), to: rel(op.to) });
        marks.push(index, index + 1);
        break;
      }
      case 'link': {
        live.set(rel(op.to), inodeOf(op.from, index));
        names.push({ index, kind: 'link', path: rel(op.from), to: rel(op.to) });
        break;
      }
      case 'unlink':
        live.delete(rel(op.path));
        names.push({ index, kind: 'unlink', path: rel(op.path) });
        marks.push(index, index + 1);
        break;
      case 'mkdir':
        dirs.add(rel(op.path));
        names.push({ index, kind: 'mkdir', path: rel(op.path) });
        break;
      case 'rmdir':
        dirs.delete(rel(op.path));
        names.push({ index, kind: 'rmdir', path: rel(op.path) });
        break;
      case 'sync-begin':
        openSyncs.set(`${op.path}`, index);
        break;
      case 'sync-end': {
        const begin = openSyncs.get(op.path) ?? index;
        if (dirs.has(rel(op.path))) folderSyncs.push([begin, index]);
        else inodes[inodeOf(op.path, index)]!.syncs.push([begin, index]);
        marks.push(index);
        break;
      }
      case 'sync-all-begin':
        openSyncs.set('', index);
        break;
      case 'sync-all-end': {
        const begin = openSyncs.get('') ?? index;
        folderSyncs.push([begin, index]);
        for (const inode of inodes) inode.syncs.push([begin, index]);
        marks.push(index);
        break;
      }
      case 'unsupported':
        throw new Error(`power-loss replay: ${op.path} was changed by an in-kernel copy (${op.what === 1 ? 'copy_file_range' : 'sendfile'}), which the log cannot replay`);
    }
  });
  marks.push(ops.length);
  return { root, length: ops.length, inodes, names, folderSyncs, pristineNames, pristineDirs, marks: [...new Set(marks)].sort((a, b) => a - b) };
}

/** How the unsynced writes of a state were chosen. */
/** none/all: every unsynced operation dropped/kept; ops: a prefix of them kept; reverse: only the last kept; sectors: each write kept, dropped or torn sector by sector. */
export type Strategy = 'none' | 'all' | 'ops' | 'reverse' | 'sectors';

export interface CrashState {
  cut: number;
  strategy: Strategy;
  seed: number;
}

/** Where in a durable-before-`cut` world the last effective sync (begin index) of a list lies; -1 for none. */
function durableBefore(syncs: readonly [number, number][], cut: number): number {
  let best = -1;
  for (const [begin, end] of syncs) if (end < cut) best = Math.max(best, begin);
  return best;
}

/**
 * Writes the files of a crash state into `out` (a fresh folder standing for the root): the pristine copy's files
 * the state keeps, then each inode's durable operations in full and its pending ones as the strategy picks.
 */
export function materialize(t: Timeline, pristineDir: string, state: CrashState, out: string): void {
  const random = rng(state.seed);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  // Names: every operation up to the last folder sync that completed before the cut, then a random prefix of the rest.
  const durableNames = durableBefore(t.folderSyncs, state.cut);
  const pendingNames = t.names.filter((n) => n.index < state.cut && n.index >= durableNames);
  // reverse keeps every name operation up to the cut: the cut itself is the moment tested.
  const keep = state.strategy === 'none' ? 0 : state.strategy === 'all' || state.strategy === 'reverse' ? pendingNames.length : Math.floor(random() * (pendingNames.length + 1));
  const applied = t.names.filter((n) => n.index < durableNames).concat(pendingNames.slice(0, keep));
  const names = new Map(t.pristineNames);
  const dirs = new Set(t.pristineDirs);
  for (const n of applied) {
    if (n.kind === 'create') names.set(n.path, n.inode!);
    else if (n.kind === 'rename') {
      const id = names.get(n.path);
      names.delete(n.path);
      if (id !== undefined) names.set(n.to!, id);
    } else if (n.kind === 'link') {
      const id = names.get(n.path);
      if (id !== undefined) names.set(n.to!, id);
    } else if (n.kind === 'unlink') names.delete(n.path);
    else if (n.kind === 'mkdir') dirs.add(n.path);
    else dirs.delete(n.path);
  }
  for (const dir of [...dirs].sort()) mkdirSync(join(out, dir), { recursive: true });
  const built = new Map<number, string>();
  for (const [name, id] of [...names].sort()) {
    const target = join(out, name);
    mkdirSync(dirname(target), { recursive: true });
    const first = built.get(id);
    if (first !== undefined) {
      // A hard link's second name: the same content.
      spawnOrThrow('cp', ['--sparse=never', first, target]);
      continue;
    }
    writeInode(t.inodes[id]!, pristineDir, state, random, target);
    built.set(id, target);
  }
}

function spawnOrThrow(cmd: string, args: string[]): void {
  const result = spawnSync(cmd, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${result.stderr}`);
}

function writeInode(inode: Inode, pristineDir: string, state: CrashState, random: () => number, target: string): void {
  // --sparse=never, as the reliability harness clones: a hole where the original had allocated zeros would turn a
  // plain image into an expanding one.
  if (inode.pristine !== undefined) spawnOrThrow('cp', ['--sparse=never', join(pristineDir, inode.pristine), target]);
  const fd = openSync(target, inode.pristine !== undefined ? 'r+' : 'w');
  try {
    const durable = durableBefore(inode.syncs, state.cut);
    const ops = inode.ops.filter((o) => o.index < state.cut);
    for (const o of ops) if (o.index < durable) apply(fd, target, o.op, undefined);
    const pending = ops.filter((o) => o.index >= durable);
    if (pending.length === 0 || state.strategy === 'none') return;
    if (state.strategy === 'all') {
      for (const o of pending) apply(fd, target, o.op, undefined);
      return;
    }
    // A sector keeps the value after some prefix of its pending writes: once one is dropped, later ones are too.
    const blocked = new Set<number>();
    let sizeBlocked = false;
    const prefix = state.strategy === 'ops' ? Math.floor(random() * (pending.length + 1)) : -1;
    pending.forEach((o, i) => {
      if (state.strategy === 'ops') {
        if (i < prefix) apply(fd, target, o.op, undefined);
        return;
      }
      if (state.strategy === 'reverse') {
        // Only the last unsynced operation lands: the state a missing barrier before it allows.
        if (i === pending.length - 1) apply(fd, target, o.op, undefined);
        return;
      }
      if (o.op.kind !== 'write') {
        // Sizes change whole; a dropped size change drops the later ones.
        if (!sizeBlocked && random() < 0.5) apply(fd, target, o.op, undefined);
        else sizeBlocked = true;
        return;
      }
      const mode = random();
      const keep = (sector: number): boolean => {
        if (blocked.has(sector)) return false;
        const yes = mode < 0.3 ? true : mode < 0.6 ? false : random() < 0.5;
        if (!yes) blocked.add(sector);
        return yes;
      };
      apply(fd, target, o.op, keep);
    });
  } finally {
    closeSync(fd);
  }
}

function apply(fd: number, path: string, op: DataOp['op'], keep: ((sector: number) => boolean) | undefined): void {
  switch (op.kind) {
    case 'open-trunc':
      ftruncateSync(fd, 0);
      return;
    case 'truncate':
      ftruncateSync(fd, op.size);
      return;
    case 'falloc': {
      // The real call (util-linux fallocate), so that allocated ranges stay allocated: plain images depend on it.
      const flags = [(op.mode & 0x01) !== 0 && (op.mode & 0x02) === 0 ? ['-n'] : [], (op.mode & 0x02) !== 0 ? ['-p'] : [], (op.mode & 0x10) !== 0 ? ['-z'] : []].flat();
      if ((op.mode & ~0x13) !== 0) throw new Error(`power-loss replay: fallocate mode ${op.mode} is not modelled`);
      spawnOrThrow('fallocate', [...flags, '-o', String(op.offset), '-l', String(op.length), path]);
      return;
    }
    case 'write': {
      if (keep === undefined) {
        writeSync(fd, op.data, 0, op.data.length, op.offset);
        return;
      }
      // Split at absolute sector boundaries and write the kept runs.
      let runStart = -1;
      const end = op.offset + op.data.length;
      const flush = (until: number): void => {
        if (runStart >= 0) writeSync(fd, op.data, runStart - op.offset, until - runStart, runStart);
        runStart = -1;
      };
      for (let at = op.offset; at < end; ) {
        const sectorEnd = Math.min(end, (Math.floor(at / SECTOR) + 1) * SECTOR);
        if (keep(Math.floor(at / SECTOR))) {
          if (runStart < 0) runStart = at;
        } else flush(at);
        at = sectorEnd;
      }
      flush(end);
    }
  }
}


/**
 * Whether order can matter at `cut`: some file has two or more unsynced data operations, a rename or unlink is
 * unsynced (the names may be lost or kept up to it), or a name operation is unsynced while some data is (a rename
 * before its data is durable). Creates of files that never get data (the
 * lock file) do not count.
 */
export function orderMatters(t: Timeline, cut: number): boolean {
  let dataPending = 0;
  for (const inode of t.inodes) {
    const durable = durableBefore(inode.syncs, cut);
    const n = inode.ops.filter((o) => o.index < cut && o.index >= durable).length;
    if (n >= 2) return true;
    dataPending += n;
  }
  const names = durableBefore(t.folderSyncs, cut);
  const pendingNames = t.names.filter((o) => o.index < cut && o.index >= names && !(o.kind === 'create' && t.inodes[o.inode!]!.ops.length === 0));
  return pendingNames.some((o) => o.kind === 'unlink' || o.kind === 'rename') || (pendingNames.length > 0 && dataPending > 0);
}

function spreadOver<T>(items: readonly T[], n: number): T[] {
  if (n >= items.length) return [...items];
  return Array.from({ length: n }, (_, i) => items[Math.floor(((i + 0.5) * items.length) / n)]!);
}

/**
 * `count` crash states. Order matters only where two or more operations are unsynced together (orderMatters): half
 * the sample goes to such marks (sync ends, renames, unlinks, the end of the run), spread over them, keeping only
 * the last unsynced write ('reverse': what a missing fsync before it allows); a quarter tears them sector by
 * sector; the rest goes to the other marks, then random cuts. Strategies and sub-seeds come from `seed`.
 */
export function sampleStates(t: Timeline, count: number, seed: number): CrashState[] {
  const random = rng(seed);
  const rich = t.marks.filter((cut) => orderMatters(t, cut));
  const plain = t.marks.filter((cut) => !rich.includes(cut));
  const reverse = spreadOver(rich, Math.ceil(count / 2));
  const torn = spreadOver(rich, Math.ceil((count - reverse.length) / 2));
  const queue: [number, Strategy][] = [
    ...reverse.map((cut) => [cut, 'reverse'] as [number, Strategy]),
    ...torn.map((cut) => [cut, 'sectors'] as [number, Strategy]),
    ...spreadOver(plain, count - reverse.length - torn.length).map((cut) => [cut, (['sectors', 'ops', 'none', 'all'] as Strategy[])[Math.floor(random() * 4)]!] as [number, Strategy]),
  ];
  const others: Strategy[] = ['sectors', 'reverse', 'ops', 'none', 'all'];
  const states: CrashState[] = [];
  for (let i = 0; i < count; i++) {
    const [cut, strategy] = i < queue.length ? queue[i]! : [Math.floor(random() * (t.length + 1)), others[Math.floor(random() * others.length)]!];
    states.push({ cut, strategy, seed: Math.floor(random() * 2 ** 31) });
  }
  return states;
}
