// The one place that starts external programs: argument arrays, LC_ALL=C, timeouts, process-group kill.
import { spawn, type ChildProcess } from 'node:child_process';
import { ToolError } from './errors.js';
import { cancellation, isCancelled } from './cancel.js';
import { debug } from './log.js';

export interface RunOptions {
  /** Kill the command after this many milliseconds (default: no limit). */
  timeoutMs?: number;
  /** Extra environment variables (LC_ALL=C is always set). */
  env?: Record<string, string>;
  /** Called with each line the command writes to stdout/stderr as it runs (progress). */
  onStdoutLine?: (line: string) => void;
  onStderrLine?: (line: string) => void;
  /** Exit codes that count as success (default [0]). */
  okExitCodes?: number[];
  input?: string;
  /**
   * The command is one step that must not be torn (a snapshot deletion): the first interruption lets it finish
   * and the caller stops after it; a second signal still kills it.
   */
  untorn?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export class CommandFailed extends ToolError {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderr: string;
  constructor(argv: readonly string[], exitCode: number | null, signal: string | null, stderr: string, why?: string) {
    const how = why ?? (signal !== null ? `was killed by ${signal}` : `failed with exit code ${exitCode}`);
    const detail = stderr.trim();
    super('tool-failed', `${argv[0]} ${how}: ${quoteArgv(argv)}${detail ? `\n${detail}` : ''}`);
    this.name = 'CommandFailed';
    this.argv = argv;
    this.exitCode = exitCode;
    this.signal = signal;
    this.stderr = stderr;
  }
}

const live = new Set<ChildProcess>();
/** The live children started with `untorn`: spared by the first interruption. */
const untorn = new Set<ChildProcess>();

export function quoteArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: 'C', LANG: 'C', ...extra };
}

/** Kills a child's whole process group (it was started as a group leader). */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // The group is already gone.
  }
}

/** Kills every child still running (on the first interruption, all but the untorn ones); fatal errors kill all. */
export function killAllChildren(options: { spareUntorn?: boolean } = {}): void {
  for (const child of live) if (!(options.spareUntorn && untorn.has(child))) killGroup(child);
}

function splitLines(onLine: (line: string) => void): (chunk: string) => void {
  let pending = '';
  return (chunk) => {
    pending += chunk;
    // qemu-img -p redraws with \r; treat it as a line end so progress arrives as it happens.
    const parts = pending.split(/\r\n|\r|\n/);
    pending = parts.pop() ?? '';
    for (const part of parts) if (part.length > 0) onLine(part);
  };
}

/** Starts a long-lived child with pipes (the appliance); the caller talks to it and must end it. */
export function startProcess(tool: string, args: readonly string[], env: Record<string, string> = {}): ChildProcess {
  debug(`+ ${quoteArgv([tool, ...args])} (started)`);
  const child = spawn(tool, args, { env: childEnv(env), detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  child.on('exit', () => live.delete(child));
  child.on('error', () => live.delete(child));
  return child;
}

/** Runs a command to completion and returns its output; throws CommandFailed on failure. */
export function run(tool: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const argv = [tool, ...args];
  const started = Date.now();
  return new Promise((resolve, reject) => {
    if (isCancelled()) {
      reject(cancellation.reason);
      return;
    }
    const child = spawn(tool, args, { env: childEnv(options.env), detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(child);
    if (options.untorn) untorn.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const stdoutLines = options.onStdoutLine ? splitLines(options.onStdoutLine) : undefined;
    const stderrLines = options.onStderrLine ? splitLines(options.onStderrLine) : undefined;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      stdoutLines?.(chunk);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      stderrLines?.(chunk);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            killGroup(child);
          }, options.timeoutMs);
    const onCancel = (): void => killGroup(child);
    if (!options.untorn) cancellation.addEventListener('abort', onCancel);
    const finish = (): void => {
      live.delete(child);
      untorn.delete(child);
      if (timer) clearTimeout(timer);
      cancellation.removeEventListener('abort', onCancel);
    };
    child.on('error', (error: NodeJS.ErrnoException) => {
      finish();
      const why = error.code === 'ENOENT' ? 'is not installed (run scripts/setup.sh)' : `could not start (${error.message})`;
      reject(new CommandFailed(argv, null, null, '', why));
    });
    child.on('close', (code, signal) => {
      finish();
      debug(`+ ${quoteArgv(argv)} (${((Date.now() - started) / 1000).toFixed(2)} s, exit ${code ?? signal})`);
      if (isCancelled() && !(options.untorn && code === 0)) {
        reject(cancellation.reason);
      } else if (timedOut) {
        reject(new CommandFailed(argv, code, signal, stderr, `timed out after ${options.timeoutMs} ms`));
      } else if (code !== null && (options.okExitCodes ?? [0]).includes(code)) {
        resolve({ stdout, stderr, exitCode: code });
      } else {
        reject(new CommandFailed(argv, code, signal, stderr));
      }
    });
  });
}
