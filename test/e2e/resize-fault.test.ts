// Crash safety of resize --resize_partition: the tool and every process it started are killed with SIGKILL at a
// step of a grow and of a shrink, then the same command is run again; it must complete, with every file identical.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage } from '../factory/index.js';
import { MiB, info, resize, verifyResized } from './resize-support.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-fault-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)]).toString().split('\n').filter(Boolean).map(Number);
  } catch {
    children = [];
  }
  return children.flatMap((child) => [child, ...descendants(child)]);
}

/** Runs the CLI and kills it and all its descendants with SIGKILL when a progress event names `step`. */
function killAtStep(args: string[], step: RegExp): Promise<{ killed: boolean; stepsSeen: string[] }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(process.cwd(), 'dist/src/cli/main.js'), ...args, '--json'], {
      env: { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const stepsSeen: string[] = [];
    let killed = false;
    let pending = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const name = /"event":"step","step":"([^"]+)"/.exec(line)?.[1];
        if (!name) continue;
        stepsSeen.push(name);
        if (!killed && step.test(name)) {
          killed = true;
          for (const pid of [child.pid!, ...descendants(child.pid!)]) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // already gone
            }
          }
        }
      }
    });
    child.on('close', () => resolve({ killed, stepsSeen }));
  });
}

async function settle(): Promise<void> {
  // libguestfs' recovery process stops the orphaned appliance; give it a moment.
  await new Promise((r) => setTimeout(r, 3000));
}

describe('resize --resize_partition survives SIGKILL', () => {
  it('grow killed while the filesystem grows, then rerun', async () => {
    const built = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, sizeMiB: 256, filesMiB: 8, deletedMiB: 0, seed: 51 });
    const run = await killAtStep(['resize', '--hdd', built.hdd, '--size', '512M', '--resize_partition'], /^Growing an ext4/);
    expect(run.killed, run.stepsSeen.join(', ')).toBe(true);
    await settle();
    const leftovers = (await readdir(dir)).filter((name) => name.includes('.prl-tmp'));
    expect(leftovers.length).toBeGreaterThan(0);
    const rerun = await resize(built.hdd, '512M', '--resize_partition');
    expect(rerun.code, rerun.stderr).toBe(0);
    await verifyResized(built, 512 * MiB);
  });

  it('shrink killed during the commit, then rerun', async () => {
    const built = await buildImage({ format: 'qcow2', table: 'mbr', content: 'ext4', dir, sizeMiB: 512, filesMiB: 8, deletedMiB: 0, seed: 52 });
    const limits = await info(built.hdd);
    const target = `${Math.ceil(limits.minimum / MiB) + 16}M`;
    const run = await killAtStep(['resize', '--hdd', built.hdd, '--size', target, '--resize_partition'], /^Committing/);
    expect(run.killed, run.stepsSeen.join(', ')).toBe(true);
    await settle();
    const rerun = await resize(built.hdd, target, '--resize_partition');
    expect(rerun.code, rerun.stderr).toBe(0);
    await verifyResized(built, (Math.ceil(limits.minimum / MiB) + 16) * MiB);
  });
});
