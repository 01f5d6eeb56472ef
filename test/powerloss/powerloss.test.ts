// Power-loss simulation (docs/testing.md): each modifying operation runs once under the recording shim, then crash
// states built from its log (a sync point plus any subset of the later unsynced writes, sector by sector; names not
// yet made durable by a folder fsync undone) are each given to the same command again, which must complete it:
// exit 0, the same guest content as the recorded run's result, clean checks, no in-use mark, no stray files. Before
// the rerun each state is judged by itself too (invariants.ts): the rerun repairs some wrong orders.
// CI runs a fixed sample per operation; PRL_POWERLOSS_FULL=1 runs 200 states per operation.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BuiltImage, ImageFormat } from '../factory/index.js';
import { readDescriptor } from '../factory/ploop.js';
import { cloneImage, runCli } from '../reliability/harness.js';
import { hostOps, type HostOp } from '../reliability/host-cells.js';
import { completed, info, standard } from '../reliability/images.js';
import { SAMPLED_STATES, SAMPLE_SEED, materialize, sampleStates, timeline, type CrashState } from './crash.js';
import { crashStateProblems } from './invariants.js';
import { recordRun } from './log.js';

/** A regular expression choosing operations by label ("ploop resize grow"), for re-planted mutations. */
const ONLY = new RegExp(process.env.PRL_POWERLOSS_ONLY ?? '.');

const IN_USE_OPEN = Buffer.from('Ynot', 'latin1');

function operations(): HostOp[] {
  const ops = [...hostOps('ploop'), ...hostOps('qcow2')];
  // A plain ploop grows by writing zeroed clusters, then their BAT entries: the data must be durable first. A ploop
  // resize takes the last partition along (docs/resize.md); swap keeps that without the appliance, as in host-cells.
  ops.push({
    format: 'ploop', operation: 'resize grow plain', build: (dir) => standard('ploop', dir, { preallocated: true, content: 'swap' }),
    args: (i) => ['resize', '--hdd', i.hdd, '--size', '320M'], after: completed.size(320), before: completed.size(256),
  });
  // Past 256 GiB the BAT of 1 MiB clusters outgrows its first cluster: the data there moves to the end of the file
  // (copy, fsync, then the BAT entry) before the longer table is written.
  ops.push({
    format: 'ploop', operation: 'resize grow past the first BAT cluster', build: (dir) => standard('ploop', dir, { content: 'swap' }),
    args: (i) => ['resize', '--hdd', i.hdd, '--size', '300G'], after: completed.size(300 * 1024), before: completed.size(256),
  });
  return ops.filter((op) => ONLY.test(`${op.format} ${op.operation}`));
}

/** The same image at another root: paths moved, nothing copied. */
function relocate(image: BuiltImage, from: string, to: string): BuiltImage {
  const move = (path: string): string => (path.startsWith(from) ? to + path.slice(from.length) : path);
  return { ...image, hdd: move(image.hdd), dataFile: move(image.dataFile), spec: { ...image.spec, dir: to } };
}

function qemuFormat(format: ImageFormat): string {
  return format === 'qcow2' ? 'qcow2' : 'parallels';
}

/** The file that shows the whole disk: the qcow2 file (its backing chain follows), or the ploop chain's top delta. */
function topFile(image: BuiltImage): string {
  return image.format === 'qcow2' ? image.dataFile : readDescriptor(image.hdd).chain[0]!;
}

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (folder: string): void => {
    for (const entry of readdirSync(folder, { withFileTypes: true })) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) walk(path);
      else out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out.sort();
}

/** Everything wrong with a state after the rerun, compared with the recorded run's result (`reference`). */
function problems(op: HostOp, image: BuiltImage, reference: BuiltImage, stateRoot: string, referenceRoot: string): string[] {
  const out: string[] = [];
  const fmt = qemuFormat(image.format);
  const state = op.after(image);
  if (state !== undefined) out.push(`not completed: ${state}`);
  const compare = spawnSync('qemu-img', ['compare', '-U', '-f', fmt, '-F', fmt, topFile(image), topFile(reference)], { encoding: 'utf8' });
  if (compare.status === 1) {
    // Naming the sectors means reading both disks whole: only for the small ones.
    const where = info(image).virtualSizeBytes <= 2 ** 30 ? `in sectors ${differingSectors(fmt, topFile(image), topFile(reference), stateRoot).join(', ')}` : compare.stdout.trim();
    out.push(`guest content differs from the completed run ${where}`);
  }
  else if (compare.status !== 0) out.push(`qemu-img compare failed: ${(compare.stdout + compare.stderr).trim()}`);
  for (const name of files(stateRoot)) {
    if (!/\.(hds|qcow2)$|\.hds\./.test(name)) continue;
    const path = join(stateRoot, name);
    const check = spawnSync('qemu-img', ['check', '-U', '-f', fmt, path], { encoding: 'utf8' });
    if (check.status !== 0) out.push(`qemu-img check ${name}: ${(check.stdout + check.stderr).trim().split('\n').slice(0, 4).join(' | ')}`);
    if (image.format === 'ploop') {
      const mark = Buffer.alloc(4);
      const fd = openSync(path, 'r');
      readSync(fd, mark, 0, 4, 44);
      closeSync(fd);
      if (mark.equals(IN_USE_OPEN)) out.push(`${name} keeps the in-use mark`);
    }
  }
  const expected = new Set(files(referenceRoot));
  const extra = files(stateRoot).filter((name) => !expected.has(name) && !name.endsWith('DiskDescriptor.xml.lck'));
  if (extra.length > 0) out.push(`files the completed run does not have: ${extra.join(', ')}`);
  const missing = [...expected].filter((name) => !existsSync(join(stateRoot, name)) && !name.endsWith('.lck'));
  if (missing.length > 0) out.push(`files missing: ${missing.join(', ')}`);
  if (image.format === 'ploop') {
    const descriptor = readFileSync(join(image.hdd, 'DiskDescriptor.xml'), 'utf8');
    if (descriptor !== readFileSync(join(reference.hdd, 'DiskDescriptor.xml'), 'utf8')) out.push('DiskDescriptor.xml differs from the completed run');
  }
  return out;
}

/** The first differing 512-byte sectors of two images' guest views (raw exports compared in full; at most 12). */
function differingSectors(fmt: string, a: string, b: string, scratch: string): string[] {
  const rawA = join(scratch, '..', 'a.raw');
  const rawB = join(scratch, '..', 'b.raw');
  try {
    for (const [from, to] of [[a, rawA], [b, rawB]] as const) {
      const result = spawnSync('qemu-img', ['convert', '-U', '-f', fmt, '-O', 'raw', from, to], { encoding: 'utf8' });
      if (result.status !== 0) return [`? (qemu-img convert: ${result.stderr.trim()})`];
    }
    const out: string[] = [];
    const fa = openSync(rawA, 'r');
    const fb = openSync(rawB, 'r');
    const bufA = Buffer.alloc(1 << 20);
    const bufB = Buffer.alloc(1 << 20);
    try {
      for (let offset = 0; out.length < 12; offset += bufA.length) {
        const na = readSync(fa, bufA, 0, bufA.length, offset);
        const nb = readSync(fb, bufB, 0, bufB.length, offset);
        if (na === 0 && nb === 0) break;
        if (na === nb && bufA.subarray(0, na).equals(bufB.subarray(0, nb))) continue;
        for (let at = 0; at < Math.max(na, nb) && out.length < 12; at += 512) {
          const sa = bufA.subarray(at, Math.min(at + 512, na));
          const sb = bufB.subarray(at, Math.min(at + 512, nb));
          if (!sa.equals(sb)) out.push(String((offset + at) / 512));
        }
      }
    } finally {
      closeSync(fa);
      closeSync(fb);
    }
    return out;
  } finally {
    rmSync(rawA, { force: true });
    rmSync(rawB, { force: true });
  }
}

/** What of the completed state a power cut right after the run's exit would lose (no rerun). */
function durable(op: HostOp, image: BuiltImage, reference: BuiltImage): string[] {
  const out: string[] = [];
  let state: string | undefined;
  try {
    state = op.after(image);
  } catch (error) {
    state = (error as Error).message.split('\n')[0];
  }
  if (state !== undefined) out.push(`not completed: ${state}`);
  const fmt = qemuFormat(image.format);
  try {
    const compare = spawnSync('qemu-img', ['compare', '-U', '-f', fmt, '-F', fmt, topFile(image), topFile(reference)], { encoding: 'utf8' });
    if (compare.status !== 0) out.push(`guest content: ${(compare.stdout + compare.stderr).trim()}`);
  } catch (error) {
    out.push((error as Error).message.split('\n')[0]!);
  }
  if (image.format === 'ploop' && readFileSync(join(image.hdd, 'DiskDescriptor.xml'), 'utf8') !== readFileSync(join(reference.hdd, 'DiskDescriptor.xml'), 'utf8')) {
    out.push('DiskDescriptor.xml differs from the completed run');
  }
  return out;
}

const roots: string[] = [];
afterAll(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

describe(`power loss (seed ${SAMPLE_SEED}, ${SAMPLED_STATES} states per operation; PRL_POWERLOSS_SEED, PRL_POWERLOSS_STATES, PRL_POWERLOSS_FULL=1)`, () => {
  it.each(operations().map((op) => [`${op.format} ${op.operation}`, op] as const))('%s: every crash state completes on a rerun', async (label, op) => {
    const root = mkdtempSync(join(tmpdir(), 'prl-powerloss-'));
    roots.push(root);
    const pristineDir = join(root, 'pristine');
    const pristine = await op.build(pristineDir);
    const referenceDir = join(root, 'reference');
    const reference = cloneImage(pristine, pristineDir, referenceDir);
    const recorded = await recordRun(op.args(reference), referenceDir, join(root, 'log'));
    expect(recorded.code, recorded.stderr).toBe(0);
    expect(op.after(reference)).toBeUndefined();
    rmSync(join(root, 'log'));
    const t = timeline(recorded.ops, referenceDir, pristineDir);
    const seed = SAMPLE_SEED ^ [...label].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 0);
    const states = sampleStates(t, SAMPLED_STATES, seed);
    console.log(`${label}: ${recorded.ops.length} logged operations, ${t.marks.length} cut marks; states from seed ${seed} (PRL_POWERLOSS_SEED=${SAMPLE_SEED})`);
    const failures: string[] = [];
    const stateDir = join(root, 'state');
    // A run that exited 0 promised durability: with every unsynced operation lost, the image is the new one already.
    materialize(t, pristineDir, { cut: t.length, strategy: 'none', seed: 0 }, stateDir);
    const acknowledged = relocate(pristine, pristineDir, stateDir);
    const lost = durable(op, acknowledged, reference);
    if (lost.length > 0) failures.push(`after the run exited 0, a power cut loses: ${lost.join('; ')}`);
    const pristineFiles = files(pristineDir);
    const referenceFiles = files(referenceDir);
    for (const [i, state] of states.entries()) {
      materialize(t, pristineDir, state, stateDir);
      const image = relocate(pristine, pristineDir, stateDir);
      const alone = crashStateProblems(image.format, image.hdd, stateDir, pristineFiles, referenceFiles);
      if (alone.length > 0) failures.push(`state ${i} ${describeState(state, recorded.ops.length)} before the rerun: ${alone.join('; ')}`);
      const rerun = await runCli(op.args(image));
      const found = rerun.code === 0 ? problems(op, image, reference, stateDir, referenceDir) : [`the rerun exited ${rerun.code}: ${rerun.stderr.trim().split('\n').slice(-3).join(' | ')}`];
      if (found.length > 0) failures.push(`state ${i} ${describeState(state, recorded.ops.length)}: ${found.join('; ')}`);
    }
    rmSync(stateDir, { recursive: true, force: true });
    expect(failures, `${failures.length} of ${states.length} crash states of ${label} failed`).toEqual([]);
  });
});

function describeState(state: CrashState, length: number): string {
  return `(cut after ${state.cut} of ${length} operations, ${state.strategy}, seed ${state.seed})`;
}
