// Concurrency: readers in parallel, writers and readers excluding each other both ways (the tool against itself and
// against other holders of the same flock, as ploop's tools take it), two writers on one ploop folder, and a running
// QEMU holding the image, which every modifying operation must refuse with exit code 6.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { startPausedVm } from '../helpers/holders.js';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { buildImage, type BuiltImage, type ImageFormat } from '../factory/index.js';
import { clearError, cloneImage, descendants, fingerprint, fingerprintDiff, judge, killTree, runCli, sleep, startCli, workDir, type Outcome, type Running } from './harness.js';
import { standard } from './images.js';
import { Tally } from './summary.js';

const tally = new Tally('concurrency');
let root: string;
const LOCKED = /is locked by another process/;

beforeAll(() => {
  root = workDir('conc');
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  tally.flush();
  expect(tally.lost).toBe(0);
});

/** A swap-only image: `resize --info` reads it without the appliance, so readers cost a second each. */
function swapImage(format: ImageFormat, name: string): Promise<BuiltImage> {
  return buildImage({ format, table: format === 'qcow2' ? 'none' : 'mbr', content: 'swap', dir: join(root, name), name: 'img', sizeMiB: 64 });
}

function lockPath(image: BuiltImage): string {
  return image.format === 'qcow2' ? image.dataFile : join(image.hdd, 'DiskDescriptor.xml.lck');
}

/** Every way to name the image to --hdd. */
function hddForms(image: BuiltImage): string[] {
  return image.format === 'qcow2' ? [image.hdd] : [image.hdd, image.dataFile, join(image.hdd, 'DiskDescriptor.xml')];
}

const writers = (hdd: string): string[][] => [
  ['resize', '--hdd', hdd, '--size', '128M'],
  ['convert', '--hdd', hdd, '--plain'],
  ['merge', '--hdd', hdd],
  ['compact', '--hdd', hdd],
];

/** Another process holding the flock (flock(1), as a ploop tool or a second prl_disk_tool would). */
async function holdFlock(path: string, mode: '-s' | '-x'): Promise<ChildProcess> {
  const child = spawn('flock', [mode, path, 'sleep', '600'], { stdio: 'ignore' });
  for (let i = 0; i < 250; i++) {
    // flock(1) takes the lock, then forks the command: the lock is held once sleep runs.
    const kids = descendants(child.pid!).map((pid) => spawnSync('cat', [`/proc/${pid}/comm`], { encoding: 'utf8' }).stdout.trim());
    if (kids.includes('sleep')) return child;
    await sleep(20);
  }
  throw new Error('flock did not take the lock');
}

/** Ends flock(1) and its sleep (the lock goes with the last holder of the open file). */
async function stop(child: ChildProcess): Promise<void> {
  await killTree(child.pid!);
}

function expectLocked(result: Outcome, label: string, failures: string[]): void {
  if (result.code !== 5 || !LOCKED.test(result.stderr)) failures.push(`${label}: exit ${result.code}, expected 5 "locked": ${result.stderr.trim().slice(0, 300)}`);
}

describe.each(['qcow2', 'ploop'] as const)('locks on %s', (format) => {
  it('N readers in parallel all succeed with the same answer', async () => {
    const started = Date.now();
    const image = await swapImage(format, `readers-${format}`);
    const forms = hddForms(image);
    const results = await Promise.all(Array.from({ length: 6 }, (_, k) => runCli(['resize', '--hdd', forms[k % forms.length]!, '--info'])));
    const ok = results.filter((r) => r.code === 0 && r.stdout === results[0]!.stdout).length;
    tally.add({ operation: 'resize --info ×6 in parallel', format, fault: 'concurrent readers', tried: 6, passed: ok, lost: 0, ms: Date.now() - started });
    expect(results.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(new Set(results.map((r) => r.stdout)).size).toBe(1);
  });

  it('a writer holding the lock excludes readers and writers; a reader excludes writers but not readers', async () => {
    const started = Date.now();
    const image = await swapImage(format, `excl-${format}`);
    const before = fingerprint(dirname(lockPath(image)));
    const failures: string[] = [];
    let tried = 0;
    const exclusive = await holdFlock(lockPath(image), '-x');
    try {
      for (const hdd of hddForms(image)) {
        for (const args of [['resize', '--hdd', hdd, '--info'], ['compact', '--hdd', hdd, '--info'], ...writers(hdd)]) {
          tried++;
          expectLocked(await runCli(args), `exclusive holder, ${args.join(' ')}`, failures);
        }
      }
    } finally {
      await stop(exclusive);
    }
    const shared = await holdFlock(lockPath(image), '-s');
    try {
      for (const hdd of hddForms(image)) {
        tried++;
        const reader = await runCli(['resize', '--hdd', hdd, '--info']);
        if (reader.code !== 0) failures.push(`shared holder, resize --info: exit ${reader.code}: ${reader.stderr.trim()}`);
        for (const args of writers(hdd)) {
          tried++;
          expectLocked(await runCli(args), `shared holder, ${args.join(' ')}`, failures);
        }
      }
    } finally {
      await stop(shared);
    }
    const changed = fingerprintDiff(before, fingerprint(dirname(lockPath(image)))).filter((d) => !d.endsWith('.lck'));
    if (changed.length > 0) failures.push(`files changed: ${changed.join(', ')}`);
    tally.add({ operation: 'readers and writers vs a flock holder', format, fault: 'lock', tried, passed: tried - failures.length, lost: 0, ms: Date.now() - started });
    expect(failures).toEqual([]);
  });

  it('two writers started together: they never run at once (one gets exit 5, or they run one after the other)', async () => {
    const started = Date.now();
    const pristineDir = join(root, `duel-${format}`);
    const pristine = await standard(format, pristineDir);
    const failures: string[] = [];
    let tried = 0;
    let lost = 0;
    let refusals = 0;
    for (let round = 0; round < 6; round++) {
      const image = cloneImage(pristine, pristineDir, join(root, `duel-${format}-${round}`));
      const forms = hddForms(image);
      const a = startCli(['convert', '--hdd', forms[0]!, '--plain']);
      const b = startCli(['resize', '--hdd', forms[round % forms.length]!, '--size', '300M']);
      const [ra, rb] = await Promise.all([a.done, b.done]);
      tried++;
      const codes = [ra.code, rb.code];
      if (!codes.every((c) => c === 0 || c === 5) || codes.every((c) => c === 5)) failures.push(`round ${round}: exits ${codes.join(', ')}: ${ra.stderr.trim()} / ${rb.stderr.trim()}`);
      refusals += codes.filter((c) => c === 5).length;
      const verdict = await judge(image);
      lost += verdict.lost;
      failures.push(...verdict.problems.map((p) => `round ${round}: ${p}`));
      rmSync(join(root, `duel-${format}-${round}`), { recursive: true, force: true });
    }
    tally.add({ operation: 'convert --plain vs resize, started together ×6', format, fault: 'two writers', tried, passed: tried - failures.length, lost, ms: Date.now() - started, note: `${refusals} refusal(s) with exit 5` });
    expect(failures).toEqual([]);
  });
});

/** Waits for the first NDJSON progress event of a --json run: the tool holds its lock by then. */
async function untilStep(running: Running, step: RegExp, timeoutMs = 10 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let finished = false;
  void running.done.then(() => (finished = true));
  while (!step.test(running.stderrSoFar())) {
    if (finished) throw new Error(`the run ended before ${step}: ${running.stderrSoFar()}`);
    if (Date.now() > deadline) throw new Error(`no ${step} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

describe('the tool against itself while the appliance runs (qcow2)', () => {
  it('a running writer makes readers and writers exit 5; a running reader makes writers exit 5', async () => {
    const started = Date.now();
    const dir = join(root, 'self');
    const image = await standard('qcow2', dir);
    const failures: string[] = [];
    let tried = 0;
    // The writer: resize --resize_partition (a shrink: the image itself is untouched until the final commit, see B4
    // for the grow), stopped with SIGTERM once the others have been refused.
    const writer = startCli(['resize', '--hdd', image.hdd, '--size', '160M', '--resize_partition', '--json']);
    await untilStep(writer, /"event":"step"/);
    for (const args of [['resize', '--hdd', image.hdd, '--info'], ['compact', '--hdd', image.hdd, '--info'], ...writers(image.hdd)]) {
      tried++;
      expectLocked(await runCli(args), `while a writer runs, ${args.join(' ')}`, failures);
    }
    process.kill(writer.pid, 'SIGTERM');
    const w = await writer.done;
    if (w.code !== 130 && w.code !== 0) failures.push(`the writer, sent SIGTERM, exited ${w.code}: ${w.stderr.trim().slice(-300)}`);
    // The reader: compact --info (an appliance measuring free space), stopped with SIGINT.
    const before = fingerprint(dir);
    const reader = startCli(['compact', '--hdd', image.hdd, '--info', '--json']);
    await untilStep(reader, /"event":"step"/);
    for (const args of writers(image.hdd)) {
      tried++;
      expectLocked(await runCli(args), `while a reader runs, ${args.join(' ')}`, failures);
    }
    process.kill(reader.pid, 'SIGINT');
    const r = await reader.done;
    if (r.code !== 130 && r.code !== 0) failures.push(`the reader, sent SIGINT, exited ${r.code}: ${r.stderr.trim().slice(-300)}`);
    const changed = fingerprintDiff(before, fingerprint(dir));
    if (changed.length > 0) failures.push(`a reader and refused writers changed files: ${changed.join(', ')}`);
    const verdict = await judge(image);
    failures.push(...verdict.problems);
    tally.add({ operation: 'tool vs tool (writer, then reader, running)', format: 'qcow2', fault: 'lock', tried, passed: tried - failures.length, lost: verdict.lost, ms: Date.now() - started, note: `writer exit ${w.code}, reader exit ${r.code}` });
    expect(failures).toEqual([]);
  });
});

describe('two writers on one ploop folder, the appliance running', () => {
  it('compact through the folder and through root.hds at once: one exits 5, the other completes', async () => {
    const started = Date.now();
    const image = await standard('ploop', join(root, 'ploop-duel'));
    const first = startCli(['compact', '--hdd', image.hdd, '--json']);
    await untilStep(first, /"event":"step"/);
    const second = await runCli(['compact', '--hdd', image.dataFile]);
    const done = await first.done;
    const verdict = await judge(image);
    const ok = second.code === 5 && LOCKED.test(second.stderr) && done.code === 0 && verdict.ok;
    tally.add({ operation: 'compact ×2 on one ploop folder', format: 'ploop', fault: 'two writers', tried: 1, passed: ok ? 1 : 0, lost: verdict.lost, ms: Date.now() - started, note: `exits ${done.code} and ${second.code}` });
    expect(second.code).toBe(5);
    expect(second.stderr).toMatch(LOCKED);
    expect(done.code).toBe(0);
    expect(verdict.problems).toEqual([]);
  });
});

describe.each(['qcow2', 'ploop'] as const)('a running QEMU holding the %s image', (format) => {
  it('every modifying operation refuses with exit 6 and changes nothing', async () => {
    const started = Date.now();
    const image = await standard(format, join(root, `vm-${format}`));
    const qemu = await startPausedVm(image.dataFile, format === 'qcow2' ? 'qcow2' : 'parallels');
    const failures: string[] = [];
    let tried = 0;
    try {
      const folder = format === 'qcow2' ? dirname(image.dataFile) : image.hdd;
      const before = fingerprint(folder);
      const commands = [...writers(image.hdd), ['merge', '--external', '--hdd', image.hdd], ['resize', '--hdd', image.hdd, '--size', '384M', '--resize_partition'], ['convert', '--hdd', image.hdd, '--expanding']];
      for (const args of commands) {
        tried++;
        // Every cell counts: a refusal with another code (7 "not supported", say) is a failure, not "not applicable".
        const result = await runCli([...args, '--json']);
        if (result.code !== 6) failures.push(`${args.join(' ')}: exit ${result.code}, expected 6: ${result.stderr.trim().slice(0, 300)}`);
        else if (clearError(result) !== undefined) failures.push(`${args.join(' ')}: ${clearError(result)}`);
      }
      const changed = fingerprintDiff(before, fingerprint(folder)).filter((d) => !d.endsWith('.lck'));
      if (changed.length > 0) failures.push(`files changed while refusing: ${changed.join(', ')}`);
    } finally {
      await killTree(qemu.pid!);
    }
    tally.add({ operation: 'every modifying operation', format, fault: 'running QEMU', tried, passed: tried - failures.length, lost: 0, ms: Date.now() - started });
    expect(failures).toEqual([]);
  });
});
