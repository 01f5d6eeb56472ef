// One fault-injection cell (an operation on one format): a clean run counted and verified, then kill -9 of the
// whole process tree right after its Nth durable change (the power-loss shim stops the process that made it), so
// every point interrupts the run; the documented recovery (the same command again), and the verdict.
import { dirname, join } from 'node:path';
import { closeSync, openSync, readSync, rmSync } from 'node:fs';
import { IN_USE_OPEN_MARK } from './images.js';
import type { BuiltImage, ImageFormat } from '../factory/index.js';
import { cloneImage, countChanges, judge, names, runAndKillAt, runCli, spread, strayFiles, workDir } from './harness.js';
import type { Row, Tally } from './summary.js';

export interface CellSpec {
  operation: string;
  format: ImageFormat;
  /** Builds the pristine image in `dir` (the whole folder is cloned for every case). */
  build: (dir: string) => Promise<BuiltImage>;
  args: (image: BuiltImage) => string[];
  /** Kill points as fractions of the clean run's durable changes (each rounded to a change, at least the first). */
  points: number | number[];
  /** What must hold once the operation has completed (size, snapshots, backing file, allocation); undefined = ok. */
  after: (image: BuiltImage) => string | undefined;
}

export interface CellResult {
  row: Row;
  failures: string[];
}

/** The folder a clone lives in: the qcow2 file's folder, or the folder holding the ploop folder. */
function caseRoot(image: BuiltImage): string {
  return image.spec.dir;
}

/** A ploop delta whose in-use mark is still set after the rerun: QEMU will not open it read-write, ploop's copy refuses it. */
function inUseLeft(image: BuiltImage): boolean {
  if (image.format !== 'ploop') return false;
  const fd = openSync(image.dataFile, 'r');
  const mark = Buffer.alloc(4);
  readSync(fd, mark, 0, 4, 44);
  closeSync(fd);
  return mark.equals(IN_USE_OPEN_MARK);
}

async function oneCase(label: string, image: BuiltImage, spec: CellSpec, change: number | undefined): Promise<{ passed: boolean; lost: number; killed: boolean; failure?: string }> {
  const folder = image.format === 'qcow2' ? dirname(image.dataFile) : image.hdd;
  const args = spec.args(image);
  const before = names(folder);
  let killed = false;
  if (change !== undefined) {
    const first = await runAndKillAt(args, caseRoot(image), change);
    killed = first.killed;
    if (!first.killed) return { passed: false, lost: 0, killed, failure: `${label}: the run ended (exit ${first.code}) before its change ${change}: the kill point interrupted nothing` };
  }
  const recovery = await runCli(args);
  const verdict = await judge(image);
  const stray = strayFiles(folder, before);
  const state = recovery.code === 0 ? spec.after(image) : undefined;
  const problems = [
    ...(recovery.code === 0 ? [] : [`the recovery run exited ${recovery.code}: ${recovery.stderr.trim().split('\n').filter((l) => !/^\d+ %$/.test(l)).slice(0, 12).join(' | ')}`]),
    ...verdict.problems,
    ...(state === undefined ? [] : [`not in the completed state: ${state}`]),
    ...(stray.length > 0 ? [`stray files: ${stray.join(', ')}`] : []),
    ...(inUseLeft(image) ? ['the in-use mark is still set'] : []),
  ];
  if (problems.length === 0) return { passed: true, lost: 0, killed };
  return { passed: false, lost: verdict.lost, killed, failure: `${label}: ${problems.join('\n  ')}` };
}

/** Runs a cell; the caller asserts `failures` is empty and adds `row` to its tally. */
export async function runCell(spec: CellSpec, tally: Tally): Promise<CellResult> {
  const started = Date.now();
  const root = workDir(`${spec.format}-${spec.operation.replace(/[^a-z]+/g, '-')}`);
  const failures: string[] = [];
  const row: Row = { operation: spec.operation, format: spec.format, fault: 'kill -9', tried: 0, passed: 0, lost: 0, ms: 0 };
  try {
    const pristineDir = join(root, 'pristine');
    const pristine = await spec.build(pristineDir);
    // The clean run: it must succeed (any other exit, "not supported" included, fails the cell), leave the files
    // intact, and tells how many durable changes a run makes.
    const clean = cloneImage(pristine, pristineDir, join(root, 'clean'));
    const { outcome: measured, changes } = await countChanges(spec.args(clean), caseRoot(clean));
    const cleanState = measured.code === 0 ? spec.after(clean) : undefined;
    if (cleanState !== undefined) failures.push(`the clean run did not reach the completed state: ${cleanState}`);
    if (measured.code !== 0) {
      failures.push(`the clean run of ${spec.args(clean).join(' ')} exited ${measured.code}: ${measured.stderr.trim()}`);
      row.tried = 1;
      return { row, failures };
    }
    const cleanVerdict = await judge(clean);
    if (!cleanVerdict.ok) failures.push(`the clean run left: ${cleanVerdict.problems.join('; ')}`);
    rmSync(join(root, 'clean'), { recursive: true, force: true });
    if (changes === 0) failures.push('the clean run made no durable change under its folder: the kill points cannot work');
    const fractions = typeof spec.points === 'number' ? spread(spec.points) : spec.points;
    const points = [...new Set(fractions.map((f) => Math.min(changes, Math.max(1, Math.round(f * changes)))))];
    for (const [i, change] of points.entries()) {
      const copy = cloneImage(pristine, pristineDir, join(root, `case-${i}`));
      const result = await oneCase(`kill -9 after durable change ${change} of ${changes}`, copy, spec, change);
      row.tried++;
      if (result.passed) {
        row.passed++;
        rmSync(caseRoot(copy), { recursive: true, force: true });
      } else {
        failures.push(result.failure!);
      }
      row.lost += result.lost;
    }
    row.note = `clean run ${(measured.ms / 1000).toFixed(1)} s, ${changes} durable changes`;
    return { row, failures };
  } finally {
    row.ms = Date.now() - started;
    tally.add(row);
    if (failures.length === 0) rmSync(root, { recursive: true, force: true });
  }
}
