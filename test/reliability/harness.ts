// The reliability suite's harness: the built CLI started detached, killed with its whole process tree at a chosen
// moment, folders fingerprinted before and after, images cloned from a pristine copy, files lost counted.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { cliPath } from '../helpers/cli.js';
import { shimPath } from '../powerloss/log.js';
import { verifyImage, type BuiltImage } from '../factory/index.js';

export const CLI = cliPath();
/** PRL_RELIABILITY_FULL=1: at least 20 kill points for every operation (docs/reliability.md gives the costs). */
export const FULL = process.env.PRL_RELIABILITY_FULL === '1';
export const ENV = { LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg', LC_ALL: 'C' };

export function workDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `prl-rel-${label}-`));
}

export interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Running {
  pid: number;
  started: number;
  done: Promise<Outcome>;
  /** What the tool has written to stderr so far (progress events under --json). */
  stderrSoFar: () => string;
}

/** Starts the CLI as the leader of its own process group, as a shell would for a foreground job. */
export function startCli(args: readonly string[], env: Record<string, string> = {}): Running {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...ENV, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<Outcome>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - started }));
  });
  return { pid: child.pid!, started, done, stderrSoFar: () => stderr };
}

export function runCli(args: readonly string[]): Promise<Outcome> {
  return startCli(args).done;
}

interface ProcInfo {
  ppid: number;
  state: string;
}

function readProc(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0]!, ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

/** Every live descendant of `root` (children of children included), from /proc. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const info = readProc(Number(name));
    if (info === undefined || info.state === 'Z') continue;
    children.set(info.ppid, [...(children.get(info.ppid) ?? []), Number(name)]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const kid of children.get(queue.shift()!) ?? []) {
      out.push(kid);
      queue.push(kid);
    }
  }
  return out;
}

export function alive(pid: number): boolean {
  const info = readProc(pid);
  return info !== undefined && info.state !== 'Z';
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/**
 * A power cut for the tool: freezes the tool and every descendant (qemu-img, guestfish, its qemu; each in its own
 * process group) with SIGSTOP until the tree stops growing, then SIGKILLs all of them and the tool's group.
 * Returns the pids killed.
 */
export async function killTree(root: number): Promise<number[]> {
  const frozen = new Set<number>([root]);
  signal(root, 'SIGSTOP');
  for (;;) {
    const found = descendants(root).filter((pid) => !frozen.has(pid));
    if (found.length === 0) break;
    for (const pid of found) {
      frozen.add(pid);
      signal(pid, 'SIGSTOP');
    }
  }
  signal(-root, 'SIGKILL');
  for (const pid of frozen) signal(pid, 'SIGKILL');
  await waitGone([...frozen], 30_000);
  return [...frozen];
}

/** Waits until none of `pids` runs any more; returns those still alive at the deadline. */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface KillResult extends Outcome {
  /** True when the kill came while the tool still ran (false: it had finished first). */
  killed: boolean;
  afterMs: number;
}

/** Runs the CLI and kills its whole tree `delayMs` after the start (unless it finished first). */
export async function runAndKill(args: readonly string[], delayMs: number): Promise<KillResult> {
  const running = startCli(args);
  let finished = false;
  void running.done.then(() => (finished = true));
  await Promise.race([sleep(delayMs), running.done]);
  const killed = !finished;
  if (killed) await killTree(running.pid);
  const outcome = await running.done;
  return { ...outcome, killed, afterMs: delayMs };
}

/** The shim's kill-point settings (test/powerloss/shim.c): stop the run right after its `n`th durable change under `root`. */
export function stopAtEnv(root: string, n: number, counter: string): Record<string, string> {
  return { LD_PRELOAD: shimPath(), PRL_PL_ROOT: realpathSync(root), PRL_PL_STOP_AT: String(n), PRL_PL_COUNTER: counter, UV_USE_IO_URING: '0' };
}

/** Durable changes (writes, size changes, names, completed syncs) a whole run makes under `root`. */
export async function countChanges(args: readonly string[], root: string): Promise<{ outcome: Outcome; changes: number }> {
  const counter = join(tmpdir(), `prl-rel-count-${process.pid}-${Date.now()}`);
  try {
    const outcome = await startCli(args, stopAtEnv(root, Number.MAX_SAFE_INTEGER, counter)).done;
    return { outcome, changes: existsSync(counter) ? Number(readFileSync(counter, 'utf8')) : 0 };
  } finally {
    rmSync(counter, { force: true });
  }
}

/** Waits until the shim has stopped the run at its kill point (true) or the run has ended (false). */
async function stoppedBeforeEnd(counter: string, done: Promise<unknown>): Promise<boolean> {
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished && !existsSync(`${counter}.hit`)) await sleep(20);
  return !finished;
}

/**
 * Runs the CLI and kills its whole tree right after its `n`th durable change under `root` (the shim stops the
 * process that made it; nothing runs on). `killed` is false when the run ended first.
 */
export async function runAndKillAt(args: readonly string[], root: string, n: number): Promise<KillResult> {
  const counter = join(tmpdir(), `prl-rel-stop-${process.pid}-${Date.now()}`);
  try {
    const running = startCli(args, stopAtEnv(root, n, counter));
    const killed = await stoppedBeforeEnd(counter, running.done);
    if (killed) await killTree(running.pid);
    const outcome = await running.done;
    return { ...outcome, killed, afterMs: outcome.ms };
  } finally {
    rmSync(counter, { force: true });
    rmSync(`${counter}.hit`, { force: true });
  }
}

/** Runs `qemu-img ARGS` and kills it right after its `n`th durable change under `root` (or lets it end first). */
export async function killAtChange(args: readonly string[], root: string, n: number): Promise<void> {
  const counter = join(tmpdir(), `prl-rel-qemu-${process.pid}-${Date.now()}`);
  try {
    const child = spawn('qemu-img', args, { env: { ...process.env, ...stopAtEnv(root, n, counter) }, stdio: 'ignore' });
    const done = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    if (await stoppedBeforeEnd(counter, done)) child.kill('SIGKILL');
    await done;
  } finally {
    rmSync(counter, { force: true });
    rmSync(`${counter}.hit`, { force: true });
  }
}

export interface SignalResult extends Outcome {
  /** Descendants that were running when the signal was sent and still ran 10 s after the tool exited. */
  orphans: number[];
  signalled: boolean;
}

/** Sends `sig` to the tool's own PID only (not its group) after `delayMs`, and watches its children end too. */
export async function runAndSignal(args: readonly string[], delayMs: number, sig: NodeJS.Signals): Promise<SignalResult> {
  const running = startCli(args);
  let finished = false;
  void running.done.then(() => (finished = true));
  await Promise.race([sleep(delayMs), running.done]);
  const signalled = !finished;
  const kids = signalled ? descendants(running.pid) : [];
  if (signalled) signal(running.pid, sig);
  const outcome = await running.done;
  const orphans = await waitGone(kids, 10_000);
  for (const pid of orphans) signal(pid, 'SIGKILL');
  return { ...outcome, orphans, signalled };
}

/** name → sha256 (or the link target, or "dir") of every entry under `dir`. */
export function fingerprint(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (folder: string): void => {
    for (const name of readdirSync(folder).sort()) {
      const path = join(folder, name);
      const stat = lstatSync(path);
      const key = relative(dir, path);
      if (stat.isDirectory()) {
        out.set(key, 'dir');
        walk(path);
      } else if (stat.isFile()) {
        out.set(key, createHash('sha256').update(readFileSync(path)).digest('hex'));
      } else {
        out.set(key, stat.isSymbolicLink() ? 'symlink' : 'special');
      }
    }
  };
  walk(dir);
  return out;
}

/** Entries whose content differs, and entries added or removed, between two fingerprints. */
export function fingerprintDiff(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [name, sum] of before) {
    if (!after.has(name)) out.push(`removed ${name}`);
    else if (after.get(name) !== sum) out.push(`changed ${name}`);
  }
  for (const name of after.keys()) if (!before.has(name)) out.push(`added ${name}`);
  return out;
}

/** Names under `dir` that were not there before, other than those `allowed` (ploop's lock file), plus any *.prl-tmp. */
export function strayFiles(dir: string, before: ReadonlySet<string>, allowed: readonly string[] = ['DiskDescriptor.xml.lck']): string[] {
  const out: string[] = [];
  const walk = (folder: string): void => {
    for (const name of readdirSync(folder)) {
      const path = join(folder, name);
      const key = relative(dir, path);
      if (name.endsWith('.prl-tmp') || (!before.has(key) && !allowed.includes(name))) out.push(key);
      if (lstatSync(path).isDirectory()) walk(path);
    }
  };
  walk(dir);
  return out;
}

export function names(dir: string): Set<string> {
  return new Set(fingerprint(dir).keys());
}

/** Copies a pristine image folder to a fresh one and points a BuiltImage at the copy. */
export function cloneImage(image: BuiltImage, fromDir: string, toDir: string): BuiltImage {
  rmSync(toDir, { recursive: true, force: true });
  // --sparse=never: a copy as allocated as the original (cp would otherwise turn fallocated ranges into holes).
  const cp = spawnSync('cp', ['-a', '--sparse=never', fromDir, toDir]);
  if (cp.status !== 0) throw new Error(`cp ${fromDir} ${toDir} failed: ${cp.stderr}`);
  const move = (path: string): string => (path.startsWith(fromDir) ? toDir + path.slice(fromDir.length) : path);
  return { ...image, hdd: move(image.hdd), dataFile: move(image.dataFile), spec: { ...image.spec, dir: toDir } };
}

export interface Judgement {
  ok: boolean;
  /** Files whose sha256 after the run differs from the expectation, or that could not be read at all. */
  lost: number;
  problems: string[];
}

/**
 * The verifier's judgement of an image after a fault and its recovery. The verifier goes on to the checksums after
 * a failed check or fsck and lists each file that differs; when it cannot get that far (no export, no mount), the
 * files cannot be read and every one counts as lost.
 */
export async function judge(image: BuiltImage, expected: Record<string, string> = image.checksums): Promise<Judgement> {
  try {
    await verifyImage(image, { checksums: expected });
    return { ok: true, lost: 0, problems: [] };
  } catch (error) {
    const message = (error as Error).message;
    if (!/failed verification:/.test(message)) return { ok: false, lost: Object.keys(expected).length, problems: [`files unreadable: ${message}`] };
    const lost = message.split('\n').filter((line) => /^- file ".*" (is missing|has sha256)/.test(line)).length;
    return { ok: false, lost, problems: [message] };
  }
}

/**
 * A clear error from a run with --json: stdout is one {"error": {...}} object whose exit code is the process's,
 * and stderr holds exactly one line besides the NDJSON progress events (no usage, no stack, no "Internal error").
 * Returns what is wrong, or undefined.
 */
export function clearError(outcome: Outcome): string | undefined {
  // A usage error (exit 2) is followed by the usage text, as the README documents.
  const text = outcome.code === 2 ? outcome.stderr.split(/^Usage:/m)[0]! : outcome.stderr;
  const lines = text.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('{"event"'));
  if (lines.length === 0) return 'stderr is empty';
  if (/Internal error/.test(outcome.stderr)) return 'the message is an internal error';
  if (/^\s+at /m.test(outcome.stderr)) return 'stderr holds a stack trace';
  if (lines.length > 1) return `stderr has ${lines.length} lines: ${JSON.stringify(lines.slice(0, 4))}`;
  try {
    const parsed = JSON.parse(outcome.stdout) as { error?: { exitCode?: number } };
    if (parsed.error?.exitCode !== outcome.code) return `stdout's error object says exit code ${parsed.error?.exitCode}, the process ${outcome.code}`;
  } catch {
    return `stdout is not one JSON object: ${JSON.stringify(outcome.stdout.slice(0, 200))}`;
  }
  return undefined;
}

export function exists(path: string): boolean {
  return existsSync(path);
}

/** Fractions of a measured run at which to kill: n points spread evenly over (0, 1). */
export function spread(n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i + 0.5) / n);
}
