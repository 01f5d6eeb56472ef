// The qcow2 convert planner: already in the requested state, refusals, space, and the steps with their options.
import { describe, expect, it } from 'vitest';
import { planQcow2Convert, describeConvertStep, type Qcow2ConvertFacts } from '../../src/commands/convert/qcow2.js';
import { ToolError } from '../../src/util/errors.js';

const MiB = 1024 * 1024;

function facts(extra: Partial<Qcow2ConvertFacts> = {}): Qcow2ConvertFacts {
  return {
    path: '/vm/a.qcow2', virtualSizeBytes: 1024 * MiB, hostBytes: 100 * MiB, plain: false, hasBacking: false, snapshots: 0,
    corrupt: false, keepOptions: ['cluster_size=65536', 'compat=1.1'], requiredBytes: { plain: 1025 * MiB, expanding: 101 * MiB },
    freeBytes: 10_000 * MiB, staleTemporaries: [], identity: '2049:12', ...extra,
  };
}

function kindOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof ToolError ? error.kind : 'other';
  }
  return undefined;
}

describe('planQcow2Convert', () => {
  it('copies with falloc for --plain, keeping the image options, then checks and renames', () => {
    const plan = planQcow2Convert(facts(), 'plain', '/vm/.a.qcow2.convert-00000000.prl-tmp');
    expect(plan.steps.map((s) => s.kind)).toEqual(['copy', 'check-copy', 'replace']);
    expect(plan.steps[0]).toMatchObject({ createOptions: 'preallocation=falloc,cluster_size=65536,compat=1.1', requiredBytes: 1025 * MiB });
    for (const step of plan.steps) expect(describeConvertStep(step)).toMatch(/\.$/);
  });
  it('copies without preallocation for --expanding', () => {
    const plan = planQcow2Convert(facts({ plain: true }), 'expanding', '/vm/t');
    expect(plan.steps[0]).toMatchObject({ kind: 'copy', createOptions: 'preallocation=off,cluster_size=65536,compat=1.1' });
  });
  it.each([
    [true, 'plain'],
    [false, 'expanding'],
  ] as const)('does nothing when plain=%s and the target is %s', (plain, target) => {
    expect(planQcow2Convert(facts({ plain }), target, '/vm/t').steps).toEqual([]);
  });
  it('removes stale temporaries of an interrupted run first', () => {
    const plan = planQcow2Convert(facts({ staleTemporaries: ['/vm/.a.qcow2.convert-deadbeef.prl-tmp'] }), 'plain', '/vm/t');
    expect(plan.steps[0]).toEqual({ kind: 'remove-stale', paths: ['/vm/.a.qcow2.convert-deadbeef.prl-tmp'] });
  });
  it.each([
    ['a backing file', { hasBacking: true }, 'refused', /merge --external/],
    ['internal snapshots', { snapshots: 2 }, 'refused', /prl_disk_tool merge --hdd/],
    ['a corrupt image', { corrupt: true }, 'image-invalid', /corrupt/],
    ['an external data file', { unsupported: 'an external data file' }, 'not-supported', /data file/],
    ['too little space', { freeBytes: 1000 * MiB }, 'no-space', /free space/],
  ] as const)('refuses %s', (_name, extra, kind, message) => {
    expect(kindOf(() => planQcow2Convert(facts(extra), 'plain', '/vm/t'))).toBe(kind);
    expect(() => planQcow2Convert(facts(extra), 'plain', '/vm/t')).toThrow(message);
  });
  it('refuses even when already in the requested state if the image has a backing file', () => {
    expect(kindOf(() => planQcow2Convert(facts({ hasBacking: true }), 'expanding', '/vm/t'))).toBe('refused');
  });
});
