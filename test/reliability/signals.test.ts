// SIGINT and SIGTERM sent to the tool's PID only, at points of a measured run: the tool must stop its children,
// roll back and exit 130 with the image as it was (content, check, the state before), or finish (exit 0) in the
// completed state; never leave a temporary file or a running child behind.
import { afterAll, describe, expect, it } from 'vitest';
import { dirname, join } from 'node:path';
import { readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { qemuImg, qemuIo, info as qcow2Info } from '../helpers/images.js';
import { progressAt, type ProgressEvent } from '../helpers/cli.js';
import type { BuiltImage, ImageFormat } from '../factory/index.js';
import { FULL, cloneImage, descendants, fingerprint, fingerprintDiff, judge, runAndSignal, runCli, sleep, spread, startCli, strayFiles, waitGone, workDir, type Outcome } from './harness.js';
import { hostOps, type HostOp } from './host-cells.js';
import { standard, completed, info } from './images.js';
import { Tally, type Row } from './summary.js';

const tally = new Tally('signals');
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
/** Host operations take 1-2 s: two points each by default, six in the full matrix. */
const HOST_POINTS = FULL ? spread(6) : [0.35, 0.75];

afterAll(() => {
  tally.flush();
  expect(tally.lost).toBe(0);
});

function folderOf(image: BuiltImage): string {
  return image.format === 'qcow2' ? dirname(image.dataFile) : image.hdd;
}

async function signalCell(op: HostOp, sig: (typeof SIGNALS)[number], fractions: number[]): Promise<{ row: Row; failures: string[] }> {
  const started = Date.now();
  const root = workDir(`sig-${op.format}-${op.operation.replace(/[^a-z]+/g, '-')}`);
  const row: Row = { operation: op.operation, format: op.format, fault: sig, tried: 0, passed: 0, lost: 0, ms: 0 };
  const failures: string[] = [];
  let interrupted = 0;
  let identical = 0;
  let early = 0;
  let knownB9 = 0;
  try {
    const pristineDir = join(root, 'pristine');
    const pristine = await op.build(pristineDir);
    const clean = cloneImage(pristine, pristineDir, join(root, 'clean'));
    const measured = await runCli(op.args(clean));
    if (measured.code !== 0) {
      failures.push(`the clean run exited ${measured.code}: ${measured.stderr.trim()}`);
      return { row, failures };
    }
    for (const [i, fraction] of fractions.entries()) {
      const copy = cloneImage(pristine, pristineDir, join(root, `case-${i}`));
      const folder = folderOf(copy);
      const before = fingerprint(folder);
      const delayMs = Math.round(fraction * measured.ms);
      const result = await runAndSignal(op.args(copy), delayMs, sig);
      const label = `${sig} at ${delayMs} ms of ${measured.ms}`;
      const problems: string[] = [];
      if (result.code === null && result.signal === sig) {
        // Signalled while Node loads the modules (before main.ts installs its handlers) or while it tears down after
        // main() returned: the default action ends the process. The image must then be as before, or completed.
        early++;
        const before = op.before(copy);
        const after = op.after(copy);
        if (before !== undefined && after !== undefined) problems.push(`killed by ${sig} outside its handlers, and the image is neither as before (${before}) nor completed (${after})`);
      } else if (result.code === 130) {
        interrupted++;
        const state = op.before(copy);
        if (state !== undefined) problems.push(`exit 130 ("left as it was") but the image changed: ${state}`);
        if (!/Interrupted by SIG(INT|TERM)/.test(result.stderr)) problems.push(`no interruption message: ${result.stderr.trim().split('\n').pop()}`);
      } else if (result.code === 0) {
        const state = op.after(copy);
        if (state !== undefined) problems.push(`exit 0 but not in the completed state: ${state}`);
      } else {
        problems.push(`exit ${result.code} (expected 130, or 0 when it had finished): ${result.stderr.trim().split('\n').slice(-2).join(' | ')}`);
      }
      if (result.orphans.length > 0) problems.push(`children still running 10 s after the tool exited: ${result.orphans.join(', ')}`);
      const stray = strayFiles(folder, new Set(before.keys()));
      if (stray.length > 0) problems.push(`stray files: ${stray.join(', ')}`);
      if (result.code === 130 && fingerprintDiff(before, fingerprint(folder)).filter((d) => !d.endsWith('.lck')).length === 0) identical++;
      const verdict = await judge(copy);
      problems.push(...verdict.problems);
      row.tried++;
      row.lost += verdict.lost;
      if (problems.length === 1 && problems[0]!.startsWith('exit 130 ("left as it was") but the image changed') && verdict.problems.length === 0 && stray.length === 0) {
        // Known bug B9 (docs/reliability.md): the signal came after a step had changed the image for good (the
        // shrink done, some snapshots deleted); the tool still says "left as it was". Files intact; counted apart.
        knownB9++;
      } else if (problems.length === 0) {
        row.passed++;
        rmSync(join(root, `case-${i}`), { recursive: true, force: true });
      } else {
        failures.push(`${label}: ${problems.join('\n  ')}`);
      }
    }
    row.note = `${interrupted} interrupted (exit 130), ${identical} of them byte-identical, ${early} ended by the signal during start-up, ${row.tried - interrupted - early} had finished${knownB9 > 0 ? `, ${knownB9} hit known bug B9 (exit 130 after a lasting change)` : ''}; clean run ${(measured.ms / 1000).toFixed(1)} s`;
    return { row, failures };
  } finally {
    row.ms = Date.now() - started;
    tally.add(row);
    if (failures.length === 0) rmSync(root, { recursive: true, force: true });
  }
}

describe.each(['qcow2', 'ploop'] as const)('SIGINT/SIGTERM on %s, no appliance', (format: ImageFormat) => {
  const cases = hostOps(format).flatMap((op) => SIGNALS.map((sig) => [`${op.operation} ${sig}`, op, sig] as const));
  it.each(cases)('%s: rolls back (130) or finishes (0), nothing left behind', async (_name, op, sig) => {
    const { failures, row } = await signalCell(op, sig, HOST_POINTS);
    expect(failures).toEqual([]);
    expect(row.lost).toBe(0);
  });
});

/**
 * Starts the tool with --json and sends `sig` to its PID once `ready` holds for what it has written to stderr so far
 * and its PID; `signalled` is false when it finished first.
 */
async function signalWhen(args: string[], ready: (stderr: string, pid: number) => boolean, sig: NodeJS.Signals): Promise<Outcome & { orphans: number[]; signalled: boolean }> {
  const running = startCli([...args, '--json']);
  let finished = false;
  void running.done.then(() => (finished = true));
  while (!finished && !ready(running.stderrSoFar(), running.pid)) await sleep(5);
  const kids = descendants(running.pid);
  const signalled = !finished;
  if (signalled) process.kill(running.pid, sig);
  const outcome = await running.done;
  const orphans = await waitGone(kids, 10_000);
  return { ...outcome, orphans, signalled };
}

/** Waits until the tool has announced `step`, then sends `sig` to its PID. */
function signalAtStep(args: string[], step: string, sig: NodeJS.Signals): Promise<Outcome & { orphans: number[] }> {
  return signalWhen(args, (stderr) => stderr.includes(`"step":"${step}"`), sig);
}

describe('SIGINT/SIGTERM amid a plain grow (qcow2)', () => {
  // B12 (docs/reliability.md), owner: resize. A signal during "Growing the image" killed qemu-img resize halfway
  // (leaked clusters), and one landing just before the GPT write left the image grown with its backup header at
  // the old end: the grow's rollback had already been given up. Now the resize finishes (untorn), the table
  // write checks for a signal before giving up the rollback, and the image goes back to its old size.
  // A signal that arrives late (a loaded machine) can find the untorn table write under way: the grow is then
  // complete and consistent, and exit 130 says the command was interrupted after its last step.
  it.each(['SIGTERM', 'SIGINT'] as const)('B12 (fixed): %s at "Growing the image": exit 130, the old size or the whole grow, a clean image', async (sig) => {
    const dir = workDir(`b12-${sig}`);
    try {
      const image = await standard('qcow2', dir);
      const result = await signalAtStep(['resize', '--hdd', image.hdd, '--size', '384M'], 'Growing the image', sig);
      expect(result.orphans).toEqual([]);
      expect([0, 130]).toContain(result.code);
      expect((await judge(image)).problems).toEqual([]);
      const size = info(image).virtualSizeBytes / 1024 / 1024;
      expect(result.code === 0 ? [384] : [256, 384]).toContain(size);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The first descendant of `root` whose command line holds `needle`, or undefined. */
function descendantRunning(root: number, needle: string): number | undefined {
  return descendants(root).find((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').includes(needle);
    } catch {
      return false;
    }
  });
}

interface TwoLayers {
  top: string;
  base: string;
  /** The content the top shows, as raw. */
  expected: string;
}

/** A chain of two qcow2 files in `dir`, img.qcow2 over base.qcow2 (1 GiB, 128 MiB of data). */
function twoLayers(dir: string, topWrites: string[]): TwoLayers {
  const base = join(dir, 'base.qcow2');
  const top = join(dir, 'img.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '1G');
  qemuIo(base, 'write -q -P 0x5a 0 128M');
  qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', top);
  qemuIo(top, ...topWrites);
  const expected = join(dir, 'expected.raw');
  qemuImg('convert', '-f', 'qcow2', '-O', 'raw', top, expected);
  return { top, base, expected };
}

/** Whether the tool's --json stderr holds a progress event that `reached` accepts. */
function progressed(reached: (event: ProgressEvent) => boolean): (stderr: string) => boolean {
  return (stderr) =>
    stderr.split('\n').some((line) => {
      try {
        return reached(JSON.parse(line) as ProgressEvent);
      } catch {
        return false; // a line still being written, or plain text
      }
    });
}

/** merge --external of `files.top`, signalled when `ready` holds: exit 130, no child left, both files without leak or corruption, the chain unchanged and showing the content it had. */
async function expectInterruptedClean(files: TwoLayers, ready: (stderr: string, pid: number) => boolean, sig: NodeJS.Signals): Promise<void> {
  const result = await signalWhen(['merge', '--external', '--hdd', files.top], ready, sig);
  expect(result.signalled, 'the tool was still running when the moment came').toBe(true);
  expect(result.orphans).toEqual([]);
  expect(result.code, result.stderr).toBe(130);
  for (const file of [files.top, files.base]) {
    const check = JSON.parse(spawnSync('qemu-img', ['check', '-f', 'qcow2', '--output=json', file], { encoding: 'utf8' }).stdout) as { leaks?: number; corruptions?: number };
    expect({ file, leaks: check.leaks ?? 0, corruptions: check.corruptions ?? 0 }).toEqual({ file, leaks: 0, corruptions: 0 });
  }
  expect(qcow2Info(files.top)['backing-filename']).toBe('base.qcow2');
  qemuImg('compare', '-f', 'qcow2', '-F', 'raw', files.top, files.expected);
}

describe('SIGINT/SIGTERM amid the qemu runs of merge --external (qcow2)', () => {
  // B19 (docs/reliability.md), owner: merge. The qemu-io runs that turn an overlay's zero-filled clusters into zero
  // clusters were killed by the first signal; qemu-io keeps its refcount updates in memory until it closes, so the
  // top was left with leaked clusters (CI: 128 leaks after a SIGTERM at 327 ms of 436). Now each run is waited
  // for, and the command stops after it with exit 130, every file clean and the chain showing the same content.
  it.each(['SIGTERM', 'SIGINT'] as const)('B19 (fixed): %s while qemu-io writes zero clusters: exit 130, no leak, the same content', async (sig) => {
    const dir = workDir(`b19-${sig}`);
    try {
      // 1500 zero-filled data clusters between clusters of data: 750 separate qemu-io writes in one run.
      const files = twoLayers(dir, Array.from({ length: 1500 }, (_, k) => `write -q -P ${k % 2 === 0 ? 0 : 0x11} ${k * 65536} 64k`));
      await expectInterruptedClean(files, (_stderr, pid) => descendantRunning(pid, 'write -q -z -u') !== undefined, sig);
      // The run the signal found was waited for: all 750 zero-filled clusters are zero clusters now. A killed
      // qemu-io leaves none or some, and leaks whenever its tables reached the file first.
      const extents = JSON.parse(qemuImg('map', '--output=json', '-f', 'qcow2', files.top)) as { length: number; depth: number; zero: boolean; data: boolean }[];
      const zeroClusters = extents.filter((e) => e.depth === 0 && e.zero && !e.data).reduce((sum, e) => sum + e.length / 65536, 0);
      expect(zeroClusters).toBe(750);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // The commit is too long to wait for: it is killed, which leaks the base's clusters once qemu has written some of
  // its tables (measured: none at 20 % or 50 % of a 900 MiB commit, 224 at 70 %); they are freed before the exit.
  it('B19 (fixed): SIGTERM amid qemu-img commit: exit 130, the base freed of what the killed commit leaked', async () => {
    const dir = workDir('b19-commit');
    try {
      const files = twoLayers(dir, ['write -q -P 0x33 0 900M']);
      await expectInterruptedClean(files, progressed(progressAt(75, 'Committing the overlays into the base')), 'SIGTERM');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SIGINT/SIGTERM with the appliance running (qcow2)', () => {
  // B4 (docs/reliability.md), owner: resize --resize_partition. The grow resizes the image itself ("Growing the
  // image", qemu-img resize) before the appliance works on the overlay; a SIGTERM or SIGINT while the appliance
  // starts ends with exit 130 and "the image was left as it was before the command", but the image stays grown
  // (384 MiB, its partition and filesystem not): the promised rollback does not happen. Files are intact.
  it('B4 (fixed): SIGTERM while the appliance starts: exit 130 and the image at its old size', async () => {
    const dir = workDir('b4');
    try {
      const image = await standard('qcow2', dir);
      const result = await signalAtStep(['resize', '--hdd', image.hdd, '--size', '384M', '--resize_partition'], 'Starting the appliance', 'SIGTERM');
      expect(result.orphans).toEqual([]);
      expect(result.code).toBe(130);
      expect((await judge(image)).problems).toEqual([]);
      expect(completed.size(256)(image)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('SIGINT while the appliance trims (compact): exit 130, guestfish and qemu end, nothing changed', async () => {
    const dir = workDir('sig-compact');
    try {
      const image = await standard('qcow2', dir);
      const before = fingerprint(dir);
      const result = await signalAtStep(['compact', '--hdd', image.hdd], 'Starting the appliance', 'SIGINT');
      expect(result.orphans).toEqual([]);
      expect(result.code).toBe(130);
      expect(strayFiles(dir, new Set(before.keys()))).toEqual([]);
      expect((await judge(image)).problems).toEqual([]);
      tally.add({ operation: 'compact (appliance starting)', format: 'qcow2', fault: 'SIGINT', tried: 1, passed: 1, lost: 0, ms: result.ms, note: `exit ${result.code}` });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
