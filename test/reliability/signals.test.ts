// SIGINT and SIGTERM sent to the tool's PID only, at points of a measured run: the tool must stop its children,
// roll back and exit 130 with the image as it was (content, check, the state before), or finish (exit 0) in the
// completed state; never leave a temporary file or a running child behind.
import { afterAll, describe, expect, it } from 'vitest';
import { dirname, join } from 'node:path';
import { rmSync } from 'node:fs';
import type { BuiltImage, ImageFormat } from '../factory/index.js';
import { FULL, cloneImage, fingerprint, fingerprintDiff, judge, runAndSignal, runCli, spread, strayFiles, workDir } from './harness.js';
import { hostOps, type HostOp } from './host-cells.js';
import { standard, completed } from './images.js';
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
  try {
    const pristineDir = join(root, 'pristine');
    const pristine = await op.build(pristineDir);
    const clean = cloneImage(pristine, pristineDir, join(root, 'clean'));
    const measured = await runCli(op.args(clean));
    if (measured.code === 7 || measured.code === 11) {
      row.skipped = `exit ${measured.code}: ${measured.stderr.trim().split('\n').pop()}`;
      return { row, failures };
    }
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
      if (result.code === 130) {
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
      if (problems.length === 0) {
        row.passed++;
        rmSync(join(root, `case-${i}`), { recursive: true, force: true });
      } else {
        failures.push(`${label}: ${problems.join('\n  ')}`);
      }
    }
    row.note = `${interrupted} interrupted (exit 130), ${identical} of them byte-identical, ${row.tried - interrupted} had finished; clean run ${(measured.ms / 1000).toFixed(1)} s`;
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

describe('SIGINT/SIGTERM with the appliance running (qcow2)', () => {
  const grow: HostOp = {
    format: 'qcow2', operation: 'resize --resize_partition grow', build: (dir) => standard('qcow2', dir),
    args: (i) => ['resize', '--hdd', i.hdd, '--size', '384M', '--resize_partition'], after: completed.near(384), before: completed.size(256),
  };
  it('SIGTERM mid-appliance: exit 130, the appliance and qemu end, the image as it was', async () => {
    const { failures, row } = await signalCell(grow, 'SIGTERM', FULL ? [0.3, 0.6, 0.9] : [0.6]);
    expect(failures).toEqual([]);
    expect(row.note).toMatch(/^[1-9]\d* interrupted/);
  });
});
