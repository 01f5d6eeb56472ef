// Records one run of the built CLI through the LD_PRELOAD shim (shim.c, compiled here with the host's gcc) and
// parses the log into the operations a power cut cares about: data, sizes, names, and the syncs that fix them.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliPath, runCommand } from '../helpers/cli.js';

export type LogOp =
  | { kind: 'write'; path: string; offset: number; data: Buffer }
  | { kind: 'truncate'; path: string; size: number }
  /** fallocate: mode 0 allocates (and may extend), 1 = KEEP_SIZE, 2|1 = PUNCH_HOLE, 0x10 = ZERO_RANGE. */
  | { kind: 'falloc'; path: string; mode: number; offset: number; length: number }
  | { kind: 'sync-begin' | 'sync-end'; path: string }
  | { kind: 'sync-all-begin' | 'sync-all-end' }
  | { kind: 'rename' | 'link'; from: string; to: string }
  | { kind: 'unlink' | 'create' | 'open-trunc' | 'mkdir' | 'rmdir'; path: string }
  | { kind: 'unsupported'; path: string; what: number };

const KINDS: Record<number, LogOp['kind']> = {
  1: 'write', 2: 'truncate', 3: 'falloc', 4: 'sync-begin', 5: 'sync-end', 6: 'rename', 7: 'unlink', 8: 'create',
  9: 'open-trunc', 10: 'mkdir', 11: 'rmdir', 12: 'sync-all-begin', 13: 'sync-all-end', 14: 'link', 99: 'unsupported',
};

const HEADER = 32;

export function parseLog(buf: Buffer): LogOp[] {
  const ops: LogOp[] = [];
  let at = 0;
  while (at + HEADER <= buf.length) {
    const type = buf.readUInt32LE(at);
    const mode = buf.readUInt32LE(at + 4);
    const a = Number(buf.readBigUInt64LE(at + 8));
    const b = Number(buf.readBigUInt64LE(at + 16));
    const len1 = buf.readUInt32LE(at + 24);
    const len2 = buf.readUInt32LE(at + 28);
    at += HEADER;
    const p1 = buf.toString('utf8', at, at + len1);
    at += len1;
    const p2 = buf.toString('utf8', at, at + len2);
    at += len2;
    const kind = KINDS[type];
    if (kind === undefined) throw new Error(`power-loss log: unknown record type ${type} at byte ${at}`);
    switch (kind) {
      case 'write':
        ops.push({ kind, path: p1, offset: a, data: buf.subarray(at, at + b) });
        at += b;
        break;
      case 'truncate': ops.push({ kind, path: p1, size: b }); break;
      case 'falloc': ops.push({ kind, path: p1, mode, offset: a, length: b }); break;
      case 'sync-begin': case 'sync-end': ops.push({ kind, path: p1 }); break;
      case 'sync-all-begin': case 'sync-all-end': ops.push({ kind }); break;
      case 'rename': case 'link': ops.push({ kind, from: p1, to: p2 }); break;
      case 'unsupported': ops.push({ kind, path: p1, what: mode }); break;
      default: ops.push({ kind, path: p1 });
    }
  }
  if (at !== buf.length) throw new Error(`power-loss log: ${buf.length - at} trailing bytes`);
  return ops;
}

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Compiles the shim (gcc is part of CI's tools) into the OS temp folder under a name made of its source's hash, so
 * that every test process shares one build and none leaves its own behind; a new source gets a new name.
 */
export function shimPath(): string {
  const source = [join(here, 'shim.c'), join(here, '..', '..', '..', 'test', 'powerloss', 'shim.c')].find(existsSync);
  if (source === undefined) throw new Error('test/powerloss/shim.c not found');
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
  const out = join(tmpdir(), `prl-powerloss-shim-${hash}.so`);
  if (!existsSync(out)) {
    const temp = `${out}.${process.pid}.tmp`;
    execFileSync('gcc', ['-shared', '-fPIC', '-O2', '-Wall', '-o', temp, source, '-ldl'], { stdio: ['ignore', 'ignore', 'pipe'] });
    renameSync(temp, out);
  }
  return out;
}

export interface Recorded {
  code: number | null;
  stdout: string;
  stderr: string;
  ops: LogOp[];
}

/**
 * Runs the CLI with the shim preloaded; every process of the run (qemu-img, qemu-io too) appends to one log.
 * UV_USE_IO_URING=0: libuv must write through libc, where the shim sees it.
 */
export function recordRun(args: readonly string[], root: string, logFile: string): Promise<Recorded> {
  return recordCommand(process.execPath, [cliPath(), ...args], root, logFile);
}

/** Runs any command with the shim preloaded (recordRun's engine: the CLI, or a test's own driver of one layer). */
export async function recordCommand(file: string, args: readonly string[], root: string, logFile: string): Promise<Recorded> {
  mkdirSync(dirname(logFile), { recursive: true });
  rmSync(logFile, { force: true });
  const outcome = await runCommand(file, args, { LD_PRELOAD: shimPath(), PRL_PL_ROOT: root, PRL_PL_LOG: logFile, UV_USE_IO_URING: '0', LC_ALL: 'C' });
  const ops = existsSync(logFile) ? parseLog(readFileSync(logFile)) : [];
  return { ...outcome, ops };
}
