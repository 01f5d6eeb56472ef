// Runs the built CLI (dist/) as a user would, and returns what it printed and its exit code.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The compiled entry point, whether this file runs from test/ (vitest) or dist/test/. */
export function cliPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const root = here.includes('/dist/') ? join(here, '..', '..', '..') : join(here, '..', '..');
  return join(root, 'dist', 'src', 'cli', 'main.js');
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCommand(process.execPath, [cliPath(), ...args], env);
}

/** Runs any command with extra environment variables and collects what it printed and its exit code. */
export function runCommand(file: string, args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export function runCliSync(args: readonly string[]): CliResult {
  const result = spawnSync(process.execPath, [cliPath(), ...args], { encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

export interface JsonCliResult {
  status: number;
  stdout: string;
  stderr: string;
  /** The JSON report, when --json was given and the command succeeded. */
  json?: Record<string, unknown>;
}

/** Runs the built CLI without blocking the worker (vitest's RPC times out when the event loop stalls). */
export async function cli(...args: string[]): Promise<JsonCliResult> {
  const { code, stdout, stderr } = await runCli(args);
  const out = { status: code ?? -1, stdout, stderr };
  if (args.includes('--json') && out.status === 0) return { ...out, json: JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown> };
  return out;
}

export interface ProgressEvent {
  event?: string;
  step?: string;
  percent?: number;
}

/** Accepts a progress event at or past `percent`, optionally only of the step named `step`. */
export function progressAt(percent: number, step?: string): (event: ProgressEvent) => boolean {
  return (event) => event.event === 'progress' && (event.percent ?? 0) >= percent && (step === undefined || event.step === step);
}

/**
 * Sends `signal` to the tool. SIGKILL is a power cut: the tool is frozen first, so that it cannot start another
 * child between the listing and the kill, then it and its children die.
 */
function signalTool(pid: number, signal: NodeJS.Signals): void {
  if (signal !== 'SIGKILL') {
    process.kill(pid, signal);
    return;
  }
  process.kill(pid, 'SIGSTOP');
  const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  for (const target of [pid, ...children.map(Number)]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Runs the CLI with --json and sends `signal` at the first progress event that `reached` accepts. Resolves with
 * that event's percent (-1 when none came) and the exit status.
 */
export function signalAtProgress(args: readonly string[], reached: (event: ProgressEvent) => boolean, signal: NodeJS.Signals): Promise<{ seen: number; status: number | null }> {
  const child = spawn(process.execPath, [cliPath(), ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let seen = -1;
  let buffer = '';
  return new Promise((resolve) => {
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) {
        let event: ProgressEvent;
        try {
          event = JSON.parse(line) as ProgressEvent;
        } catch {
          continue; // a message in plain text, such as the interruption's
        }
        if (seen >= 0 || !reached(event)) continue;
        seen = event.percent ?? 0;
        signalTool(child.pid!, signal);
      }
    });
    child.on('close', (status) => resolve({ seen, status }));
  });
}
