// Check, then use, under attack (issue 23): while `merge` runs, another process swaps a delta's name with a symlink
// to another container's delta in a tight loop (renameat2 RENAME_EXCHANGE, swap.c). Whatever instant the tool looks,
// it must either refuse in one sentence or merge through the files it validated: in N runs, not one byte of the
// file outside the folder changes. (Before the session held the deltas open, the fold opened the base again by its
// name and wrote through the symlink.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli, workDir } from './harness.js';
import { addPloopSnapshot } from '../helpers/ploop.js';
import { settleDelta } from '../helpers/real-ploop-exec.js';

const RUNS = 20;
const SIZE_MIB = 64;

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Compiles swap.c once per source version into the OS temp folder. */
function swapper(): string {
  const source = join(dirname(fileURLToPath(import.meta.url)), 'swap.c');
  const binary = join(tmpdir(), `prl-swap-${sha(source).slice(0, 12)}`);
  if (!existsSync(binary)) execFileSync('gcc', ['-O2', '-Wall', '-o', binary, source], { stdio: ['ignore', 'ignore', 'pipe'] });
  return binary;
}

/** A ploop folder with data in its top delta over an empty base: merge writes the base. */
function chain(folder: string): void {
  mkdirSync(folder, { recursive: true });
  const delta = join(folder, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, `${SIZE_MIB}M`]);
  execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x61 0 8M', '-c', 'write -P 0x62 20M 3M', delta], { stdio: 'ignore' });
  settleDelta(delta);
  addPloopSnapshot(folder, SIZE_MIB, 'top');
}

function victim(file: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', file, `${SIZE_MIB}M`]);
  execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x77 40M 4M', file], { stdio: 'ignore' });
  settleDelta(file);
}

let root: string;
let swap: string;
beforeAll(() => {
  root = workDir('race-ploop');
  swap = swapper();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a delta swapped for a symlink to another container\'s delta while merge runs', () => {
  for (const target of ['root.hds', 'root.hds.top'] as const) {
    it(`${target} (the ${target === 'root.hds' ? 'base merge writes' : 'top merge removes'}): ${RUNS} runs, 0 bytes changed outside the folder`, async () => {
      const outcomes: string[] = [];
      for (let run = 0; run < RUNS; run++) {
        const dir = join(root, `${target}-${run}`);
        const vm = join(dir, 'vm');
        const out = join(dir, 'out');
        chain(vm);
        mkdirSync(out);
        // The victim: another container's delta, holding data of its own (not what the merge writes).
        victim(join(out, 'victim.hds'));
        const before = sha(join(out, 'victim.hds'));
        symlinkSync(join(out, 'victim.hds'), join(vm, 'swap.hds'));
        const attacker = spawn(swap, [join(vm, target), join(vm, 'swap.hds')], { stdio: 'ignore' });
        let result;
        try {
          result = await runCli(['merge', '--hdd', vm]);
        } finally {
          attacker.kill('SIGKILL');
        }
        const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
        outcomes.push(`${result.code}`);
        expect(sha(join(out, 'victim.hds')), `run ${run}: the file outside the folder changed (exit ${result.code}: ${result.stderr.trim()})`).toBe(before);
        expect([0, 4, 7, 8], `run ${run}: ${result.stderr.trim()}`).toContain(result.code);
        expect(lines.length, `run ${run}: stderr ${result.stderr}`).toBe(result.code === 0 ? 0 : 1);
        expect(result.stderr).not.toMatch(/Internal error|^\s+at /m);
        rmSync(dir, { recursive: true, force: true });
      }
      console.log(`${target}: exit codes of ${RUNS} runs: ${outcomes.join(' ')}`);
    }, 15 * 60_000);
  }
});
