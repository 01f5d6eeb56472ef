// Runs a command sequence and measures it: wall time, bytes its process tree wrote, peak extra host allocation, appliance starts.
//
// Bytes written: Linux adds the I/O counters of a reaped child (and of its own reaped children) to the parent's
// /proc/<pid>/io, so the difference of this process's write_bytes across a command is what the command's whole tree
// caused to be written to storage (page-cache dirtying counts when it happens; rewriting a page that is still dirty
// counts once). The bench process itself only reads while a command runs. A grandchild that escapes (reparented to
// init) would be missed; guestfish, virt-* and prl-disk-tool all wait for their qemu children.
// Extra space: the allocated bytes (st_blocks) of every file under the watched folders, polled, peak minus baseline.
// Appliances: qemu-system processes among the descendants, polled (an appliance lives for many seconds).
import { spawn, type ChildProcess } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Cmd {
  argv: string[];
  /** Extra environment for this command. */
  env?: Record<string, string>;
}

export interface StepResult {
  argv: string[];
  exitCode: number | null;
  signal: string | null;
  wallMs: number;
  /** Last lines of stderr (and stdout) of a failed step, for the reproduction. */
  tail?: string;
}

export interface Measurement {
  ok: boolean;
  steps: StepResult[];
  wallMs: number;
  writeBytes: number;
  readBytes: number;
  /** Peak of (allocated bytes in the watched folders − baseline) while the sequence ran. */
  peakExtraBytes: number;
  /** Allocated bytes in the watched folders after the sequence − baseline (negative: space freed). */
  finalExtraBytes: number;
  /** qemu-system processes started below the commands. */
  appliances: number;
  stdout: string;
  stderr: string;
}

export interface MeasureOptions {
  /** Folders whose allocation is tracked. */
  watch: string[];
  env: Record<string, string>;
  timeoutMs: number;
  pollMs?: number;
}

let current: ChildProcess | undefined;

/** Kills the running command's process group (the bench's SIGINT handler uses it). */
export function killCurrent(): void {
  if (current?.pid !== undefined && current.exitCode === null) {
    try {
      process.kill(-current.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

function selfIo(): { write: number; read: number } {
  const fields = new Map<string, number>();
  for (const line of readFileSync('/proc/self/io', 'utf8').trim().split('\n')) {
    const [key, value] = line.split(':');
    fields.set(key!.trim(), Number(value));
  }
  return { write: fields.get('write_bytes') ?? 0, read: fields.get('read_bytes') ?? 0 };
}

/** Allocated bytes of every regular file under `dir` (recursively); a missing folder counts 0. */
export function allocatedBytes(dir: string): number {
  let total = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const path = join(dir, name);
    try {
      const st = lstatSync(path);
      if (st.isDirectory()) total += allocatedBytes(path);
      else if (st.isFile()) total += st.blocks * 512;
    } catch {
      // Removed while we looked (a temporary file).
    }
  }
  return total;
}

/** qemu-system processes below `root` (pid → start time), added to `seen`. */
function scanAppliances(root: number, seen: Set<string>): void {
  const parent = new Map<number, number>();
  const qemu: { pid: number; start: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // comm may hold spaces and parentheses: the fields after it start after the last ')'.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const rest = stat.slice(close + 2).split(' ');
    const pid = Number(name);
    parent.set(pid, Number(rest[1]));
    if (comm.startsWith('qemu-system')) qemu.push({ pid, start: rest[19] ?? '' });
  }
  for (const { pid, start } of qemu) {
    for (let p: number | undefined = parent.get(pid), hops = 0; p !== undefined && p > 1 && hops < 64; p = parent.get(p), hops++) {
      if (p === root) {
        seen.add(`${pid}:${start}`);
        break;
      }
    }
  }
}

function runOne(cmd: Cmd, options: MeasureOptions, onSpawn: (pid: number) => void): Promise<StepResult & { stdout: string; stderr: string }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const [file, ...args] = cmd.argv;
    const child = spawn(file!, args, { env: { ...process.env, ...options.env, ...cmd.env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    current = child;
    if (child.pid !== undefined) onSpawn(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => killCurrent(), options.timeoutMs);
    const done = (exitCode: number | null, signal: string | null): void => {
      clearTimeout(timer);
      current = undefined;
      const wallMs = Date.now() - started;
      const result: StepResult & { stdout: string; stderr: string } = { argv: cmd.argv, exitCode, signal, wallMs, stdout, stderr };
      if (exitCode !== 0) result.tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-15).join('\n');
      resolve(result);
    };
    child.on('error', (error) => {
      stderr += String(error);
      done(null, null);
    });
    child.on('close', (code, signal) => done(code, signal));
  });
}

/** Runs the commands one after another (stopping at the first failure) and measures them as one. */
export async function measure(cmds: Cmd[], options: MeasureOptions): Promise<Measurement> {
  const baseline = options.watch.reduce((sum, dir) => sum + allocatedBytes(dir), 0);
  let peak = baseline;
  const appliances = new Set<string>();
  let root: number | undefined;
  const poll = (): void => {
    peak = Math.max(peak, options.watch.reduce((sum, dir) => sum + allocatedBytes(dir), 0));
    if (root !== undefined) scanAppliances(root, appliances);
  };
  const timer = setInterval(poll, options.pollMs ?? 250);
  const before = selfIo();
  const steps: StepResult[] = [];
  let stdout = '';
  let stderr = '';
  let ok = true;
  try {
    for (const cmd of cmds) {
      const result = await runOne(cmd, options, (pid) => {
        root = pid;
      });
      const { stdout: out, stderr: err, ...step } = result;
      steps.push(step);
      stdout += out;
      stderr += err;
      if (step.exitCode !== 0) {
        ok = false;
        break;
      }
    }
  } finally {
    clearInterval(timer);
  }
  const after = selfIo();
  const final = options.watch.reduce((sum, dir) => sum + allocatedBytes(dir), 0);
  peak = Math.max(peak, final);
  return {
    ok,
    steps,
    wallMs: steps.reduce((sum, s) => sum + s.wallMs, 0),
    writeBytes: after.write - before.write,
    readBytes: after.read - before.read,
    peakExtraBytes: peak - baseline,
    finalExtraBytes: final - baseline,
    appliances: appliances.size,
    stdout,
    stderr,
  };
}
