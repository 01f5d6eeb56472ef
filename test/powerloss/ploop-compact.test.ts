// Power loss during the ploop compact engine (the part of `compact` that changes the image: the appliance before
// it only trims a throwaway overlay, so the CLI's power-loss set leaves compact out). The engine runs in a child
// (test/unit/ploop/crash-child.ts) under the recording shim; every crash state built from its log must show each
// kept cluster intact and each freed one as its old content or zeros, to QEMU and after our recovery; the
// recovered image must pass qemu-img check and real ploop's strict check, and running the compaction again must
// complete it with the content of the recorded run.
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { closePloopImage, openPloopImage, recoverPloopImage } from '../../src/formats/ploop/image.js';
import { makePloop, qemuCheck, qemuReadRaw } from '../unit/ploop/fixtures.js';
import { realPloopProblems, settleFolder } from '../helpers/real-ploop.js';
import { SAMPLED_STATES, SAMPLE_SEED, materialize, sampleStates, timeline } from './crash.js';
import { recordCommand } from './log.js';

const VITE_NODE = resolve('node_modules/.bin/vite-node');
const CHILD = resolve('test/unit/ploop/crash-child.ts');
const CLUSTER = 64 * 1024;
const SIZE = 64 * 1024 * 1024;
/** Data spread so that compaction moves clusters from the tail into the holes the freed ones leave. */
const WRITES = ['write -P 0x11 0 64k', 'write -P 0x22 128k 192k', 'write -P 0x33 1M 64k', 'write -P 0x44 20M 128k', 'write -P 0x55 60M 64k', 'write -P 0x66 62M 128k'];
const FREE = [0, 2, 3, 320];

const root = mkdtempSync(join(tmpdir(), 'prl-powerloss-compact-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function compactIn(dir: string): Promise<void> {
  return new Promise((done, fail) => execFile(VITE_NODE, [CHILD, 'compact', dir, '0', FREE.join(',')], (error, _out, stderr) => (error ? fail(new Error(`compact child failed: ${stderr}`)) : done())));
}

/** Clusters whose content is not the old one (kept) or the old one or zeros (freed). */
function damaged(raw: Buffer, old: Buffer): number[] {
  const out: number[] = [];
  for (let c = 0; c < SIZE / CLUSTER; c++) {
    const now = raw.subarray(c * CLUSTER, (c + 1) * CLUSTER);
    const before = old.subarray(c * CLUSTER, (c + 1) * CLUSTER);
    if (now.equals(before)) continue;
    if (FREE.includes(c) && now.every((b) => b === 0)) continue;
    out.push(c);
  }
  return out;
}

// A state costs a few seconds (a vite-node start for the rerun): the time budget grows with the number of states.
it(`ploop compact engine: every power-loss state keeps the kept clusters and recovers (seed ${SAMPLE_SEED}, ${SAMPLED_STATES} states)`, async () => {
  const pristineDir = join(root, 'pristine');
  const referenceDir = join(root, 'reference');
  const scratch = join(root, 'scratch');
  mkdirSync(pristineDir);
  mkdirSync(scratch);
  makePloop(pristineDir, SIZE, CLUSTER, WRITES);
  settleFolder(pristineDir);
  const old = qemuReadRaw(join(pristineDir, 'root.hds'), scratch);
  cpSync(pristineDir, referenceDir, { recursive: true });
  const recorded = await recordCommand(VITE_NODE, [CHILD, 'compact', referenceDir, '0', FREE.join(',')], referenceDir, join(root, 'log'));
  expect(recorded.code, recorded.stderr).toBe(0);
  const compacted = qemuReadRaw(join(referenceDir, 'root.hds'), scratch);
  expect(damaged(compacted, old)).toEqual([]);
  const t = timeline(recorded.ops, referenceDir, pristineDir);
  const states = sampleStates(t, SAMPLED_STATES, SAMPLE_SEED);
  const stateDir = join(root, 'state');
  const failures: string[] = [];
  for (const [i, state] of states.entries()) {
    const label = `state ${i} (cut after ${state.cut} of ${recorded.ops.length} operations, ${state.strategy}, seed ${state.seed})`;
    materialize(t, pristineDir, state, stateDir);
    const delta = join(stateDir, 'root.hds');
    const seen = damaged(qemuReadRaw(delta, scratch), old);
    if (seen.length > 0) failures.push(`${label}: QEMU reads other content in cluster(s) ${seen.join(', ')}`);
    const image = openPloopImage(stateDir, { write: true });
    if (image.pendingRecovery.length > 0) recoverPloopImage(image);
    closePloopImage(image);
    const check = qemuCheck(delta);
    if (check.status !== 0) failures.push(`${label}: qemu-img check after recovery: ${check.output.trim().split('\n').slice(0, 3).join(' | ')}`);
    const recovered = damaged(qemuReadRaw(delta, scratch), old);
    if (recovered.length > 0) failures.push(`${label}: after recovery, other content in cluster(s) ${recovered.join(', ')}`);
    failures.push(...(await realPloopProblems(stateDir)).map((p) => `${label}: ${p}`));
    await compactIn(stateDir);
    if (!qemuReadRaw(delta, scratch).equals(compacted)) failures.push(`${label}: compacting again does not give the recorded run's content`);
  }
  expect(failures, `${failures.length} problem(s) in ${states.length} crash states`).toEqual([]);
}, Math.max(600_000, SAMPLED_STATES * 15_000));
