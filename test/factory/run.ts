// The factory's own subprocess runner and cleanup scope; independent of src/ so the oracle never trusts the product.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ToolResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface ToolOptions {
  /** Exit codes that count as success (default [0]). */
  ok?: number[];
  input?: string;
  timeoutMs?: number;
  env?: Record<string, string>;
}

export class ToolFailed extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`${argv[0]} failed with exit code ${exitCode}: ${argv.join(' ')}\n${(stderr || stdout).trim()}`);
    this.name = 'ToolFailed';
  }
}

const env = {
  ...process.env,
  LC_ALL: 'C',
  LANG: 'C',
  // lvm complains about every inherited descriptor (vitest's IPC pipe among them).
  LVM_SUPPRESS_FD_WARNINGS: '1',
  LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg',
};

/** Runs a tool with an argument array (never a shell), LC_ALL=C and a timeout; throws ToolFailed unless the exit code is accepted. */
export function tool(cmd: string, args: readonly string[], options: ToolOptions = {}): Promise<ToolResult> {
  const ok = options.ok ?? [0];
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        env: { ...env, ...options.env },
        maxBuffer: 256 * 1024 * 1024,
        timeout: options.timeoutMs ?? 10 * 60 * 1000,
        killSignal: 'SIGKILL',
        encoding: 'utf8',
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        if (code !== null && ok.includes(code)) resolve({ stdout, stderr, exitCode: code });
        else reject(new ToolFailed([cmd, ...args], code, stdout, stderr));
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** Cleanup actions run in reverse order; every one runs even when an earlier one fails. */
export class Scope {
  private readonly undo: { what: string; fn: () => Promise<unknown> }[] = [];

  defer(what: string, fn: () => Promise<unknown>): void {
    this.undo.push({ what, fn });
  }

  /** Runs the cleanups; failures are collected into one Error (thrown only if `primary` is absent). */
  async close(primary?: unknown): Promise<void> {
    const failures: string[] = [];
    while (this.undo.length > 0) {
      const step = this.undo.pop()!;
      try {
        await step.fn();
      } catch (err) {
        failures.push(`${step.what}: ${(err as Error).message}`);
      }
    }
    if (failures.length > 0 && primary === undefined) throw new Error(`cleanup failed:\n${failures.join('\n')}`);
  }
}

/** Runs `fn` with a fresh scope and always closes it; a failure of `fn` wins over cleanup failures. */
export async function scoped<T>(fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope();
  let result: T;
  try {
    result = await fn(scope);
  } catch (err) {
    await scope.close(err);
    throw err;
  }
  await scope.close();
  return result;
}

/** A unique temporary folder (in the system temp dir, never beside the image) removed when the scope closes. */
export async function tempDir(scope: Scope, label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `prl-factory-${label}-${process.pid}-`));
  scope.defer(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return dir;
}
