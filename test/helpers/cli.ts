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
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath(), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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
