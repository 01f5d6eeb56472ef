// Planners of merge and merge --external: steps, order, and every refusal, from plain facts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { planSnapshotMerge, describeSnapshotStep } from '../../src/commands/merge/merge.js';
import { planExternalMerge, describeExternalStep, type ChainFacts } from '../../src/commands/merge/external.js';
import { qcow2ImageOpts } from '../../src/formats/qcow2/changes.js';
import { countCopiedFlagErrors } from '../../src/formats/qcow2/qemu-img.js';
import { findStaleTemporaries } from '../../src/util/atomic.js';
import { ToolError } from '../../src/util/errors.js';

const MiB = 1024 * 1024;

function layer(path: string, extra: Partial<ChainFacts['chain'][number]> = {}): ChainFacts['chain'][number] {
  return { path, virtualSizeBytes: 64 * MiB, dirty: false, corrupt: false, snapshots: 0, clusterBytes: 65536, zeroClusters: false, hostBytes: 4 * MiB, ...extra };
}

function chainOf(n: number): ChainFacts['chain'] {
  return Array.from({ length: n }, (_, i) => layer(`/vm/l${i}.qcow2`, i < n - 1 ? { backingPath: `/vm/l${i + 1}.qcow2` } : {}));
}

function kindOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof ToolError ? error.kind : 'other';
  }
  return undefined;
}

describe('planSnapshotMerge', () => {
  it('deletes every snapshot in table order, by name (qemu-img snapshot -d matches names only)', () => {
    const plan = planSnapshotMerge('/vm/a.qcow2', [
      { id: '1', name: '2', vmStateSize: 0 },
      { id: '2', name: 'dup', vmStateSize: 0 },
      { id: '3', name: 'dup', vmStateSize: 0 },
    ]);
    expect(plan.steps.map((s) => (s.kind === 'delete-snapshot' ? s.name : ''))).toEqual(['2', 'dup', 'dup']);
    expect(plan.steps.map((s) => (s.kind === 'delete-snapshot' ? s.id : ''))).toEqual(['1', '2', '3']);
    expect(describeSnapshotStep(plan.steps[0]!)).toMatch(/snapshot 1 \("2"\)/);
  });
  it('has nothing to do without snapshots', () => expect(planSnapshotMerge('/vm/a.qcow2', []).steps).toEqual([]));
  it('frees the leaks an interrupted merge left before anything else, even with no snapshot left', () => {
    const plan = planSnapshotMerge('/vm/a.qcow2', [], 3);
    expect(plan.steps).toEqual([{ kind: 'repair-leaks', path: '/vm/a.qcow2', leaks: 3 }]);
    expect(plan.summary).toMatch(/3 leaked cluster/);
    const both = planSnapshotMerge('/vm/a.qcow2', [{ id: '1', name: 'a', vmStateSize: 0 }], 1);
    expect(both.steps.map((s) => s.kind)).toEqual(['repair-leaks', 'delete-snapshot']);
  });
  it('sets the OFLAG_COPIED bits an interrupted deletion left wrong first, leaks included, even with no snapshot left (B16)', () => {
    const plan = planSnapshotMerge('/vm/a.qcow2', [], 1, 1024);
    expect(plan.steps).toEqual([{ kind: 'repair-copied-flags', path: '/vm/a.qcow2', clusters: 1024, leaks: 1 }]);
    expect(plan.summary).toMatch(/1024 wrong OFLAG_COPIED bit\(s\), 1 leaked cluster/);
    expect(describeSnapshotStep(plan.steps[0]!)).toMatch(/qemu-img check -r all; .*no guest byte changes\.$/);
    const both = planSnapshotMerge('/vm/a.qcow2', [{ id: '2', name: 'b', vmStateSize: 0 }], 0, 3);
    expect(both.steps.map((s) => s.kind)).toEqual(['repair-copied-flags', 'delete-snapshot']);
  });
  it('counts the OFLAG_COPIED findings of qemu-img check, and nothing else', () => {
    const stderr = [
      'Leaked cluster 1546 refcount=1 reference=0',
      'ERROR OFLAG_COPIED data cluster: l2_entry=50000 refcount=1',
      'ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=40000 refcount=1',
      'ERROR cluster 7 refcount=1 reference=2',
      'Repairing OFLAG_COPIED data cluster: l2_entry=60000 refcount=1',
    ].join('\n');
    expect(countCopiedFlagErrors(stderr)).toBe(2);
  });
});

describe('planExternalMerge', () => {
  const facts = (chain: ChainFacts['chain'], extra: Partial<ChainFacts> = {}): ChainFacts => ({
    chain, freeBytesAtBase: 10_000 * MiB, baseOnTopFilesystem: true, ...extra,
  });
  it.each([1, 2, 4])('a chain of %i folds into the base, renamed over the top, intermediates removed', (n) => {
    const plan = planExternalMerge(facts(chainOf(n)));
    if (n === 1) return expect(plan.steps).toEqual([]);
    expect(plan.steps.map((s) => s.kind)).toEqual(['clear-under-zeros', 'commit', 'replace-top', ...Array(n - 2).fill('remove')]);
    expect(plan.steps[1]).toMatchObject({ top: '/vm/l0.qcow2', base: `/vm/l${n - 1}.qcow2`, baseName: `/vm/l${n - 1}.qcow2`, overlays: n - 1, dataBytes: (n - 1) * 4 * MiB });
    expect(plan.steps[0]).toEqual({ kind: 'clear-under-zeros', top: '/vm/l0.qcow2', base: `/vm/l${n - 1}.qcow2`, overlays: n - 1 });
    expect(plan.steps[2]).toEqual({ kind: 'replace-top', base: `/vm/l${n - 1}.qcow2`, top: '/vm/l0.qcow2' });
    for (const step of plan.steps) expect(describeExternalStep(step)).toMatch(/\.$/);
  });
  it('writes the intermediates down before the rename and forgets the note after removing them', () => {
    const plan = planExternalMerge(facts(chainOf(4), { note: '/vm/.l0.qcow2.merge-leftovers-0123abcd.prl-tmp' }));
    expect(plan.steps.map((s) => s.kind)).toEqual(['clear-under-zeros', 'commit', 'note-intermediates', 'replace-top', 'remove', 'remove', 'forget-notes']);
    expect(plan.steps[2]).toEqual({ kind: 'note-intermediates', note: '/vm/.l0.qcow2.merge-leftovers-0123abcd.prl-tmp', top: '/vm/l0.qcow2', resultFile: '/vm/l3.qcow2', paths: ['/vm/l1.qcow2', '/vm/l2.qcow2'] });
    // Two layers have no intermediate: no note.
    expect(planExternalMerge(facts(chainOf(2), { note: '/vm/n' })).steps.map((s) => s.kind)).toEqual(['clear-under-zeros', 'commit', 'replace-top']);
  });
  it('a standalone top with a note left by a killed run: removes what the note names, then the note', () => {
    const leftovers = { notes: ['/vm/.l0.qcow2.merge-leftovers-0123abcd.prl-tmp'], paths: ['/vm/l1.qcow2'], warnings: [] };
    const plan = planExternalMerge(facts(chainOf(1), { leftovers }));
    expect(plan.steps).toEqual([{ kind: 'remove', path: '/vm/l1.qcow2' }, { kind: 'forget-notes', notes: leftovers.notes }]);
    expect(plan.summary).toMatch(/remove the 1 intermediate image\(s\) an interrupted merge --external left/);
    // A chain still there means the rename never happened: the stale note is dropped and the merge runs again.
    const again = planExternalMerge(facts(chainOf(3), { leftovers, note: '/vm/new' }));
    expect(again.steps.map((s) => s.kind)).toEqual(['forget-notes', 'clear-under-zeros', 'commit', 'note-intermediates', 'replace-top', 'remove', 'forget-notes']);
  });
  it('cuts a base larger than the top back to the top size before the rename', () => {
    const chain = chainOf(2);
    chain[1]!.virtualSizeBytes = 128 * MiB;
    expect(planExternalMerge(facts(chain)).steps.map((s) => s.kind)).toEqual(['clear-under-zeros', 'commit', 'shrink-base', 'replace-top']);
  });
  it('accepts a base smaller than the top (commit grows it)', () => {
    const chain = chainOf(3);
    chain[2]!.virtualSizeBytes = 32 * MiB;
    expect(planExternalMerge(facts(chain)).steps[1]!.kind).toBe('commit');
  });
  it.each([
    ['snapshots in the top', (c: ChainFacts['chain']) => (c[0]!.snapshots = 1), 'refused'],
    ['snapshots in the base', (c: ChainFacts['chain']) => (c[2]!.snapshots = 2), 'refused'],
    ['a corrupt layer', (c: ChainFacts['chain']) => (c[1]!.corrupt = true), 'image-invalid'],
    ['an external data file', (c: ChainFacts['chain']) => (c[2]!.unsupported = 'an external data file'), 'not-supported'],
    ['an intermediate smaller than the top', (c: ChainFacts['chain']) => (c[1]!.virtualSizeBytes = 1 * MiB), 'not-supported'],
  ])('refuses %s', (_name, poke, kind) => {
    const chain = chainOf(3);
    poke(chain);
    expect(kindOf(() => planExternalMerge(facts(chain)))).toBe(kind);
  });
  it('refuses when the base cannot grow by the overlays data', () => {
    expect(kindOf(() => planExternalMerge(facts(chainOf(3), { freeBytesAtBase: 8 * MiB })))).toBe('no-space');
  });
  it('turns the zeros of v3 overlays into zero clusters before the commit, unless the base is plain (issue 19)', () => {
    const chain = chainOf(4);
    for (const [i, l] of chain.entries()) l.zeroClusters = i !== 1;
    const plan = planExternalMerge(facts(chain));
    expect(plan.steps.map((s) => s.kind)).toEqual(['zero-overlays', 'clear-under-zeros', 'commit', 'replace-top', 'remove', 'remove']);
    // The v2 layer (no zero clusters) and the base are not scanned.
    expect(plan.steps[0]).toEqual({ kind: 'zero-overlays', overlays: [{ path: '/vm/l0.qcow2', clusterBytes: 65536 }, { path: '/vm/l2.qcow2', clusterBytes: 65536 }], dataBytes: 8 * MiB });
    expect(describeExternalStep(plan.steps[0]!)).toMatch(/only zeros into zero clusters/);
    const plain = planExternalMerge(facts(chain, { basePreallocated: true }));
    expect(plain.steps.map((s) => s.kind)).toEqual(['clear-under-zeros', 'commit', 'reallocate-base', 'replace-top', 'remove', 'remove']);
    const larger = chainOf(2);
    larger[1]!.virtualSizeBytes = 128 * MiB;
    expect(planExternalMerge(facts(larger, { basePreallocated: true })).steps.map((s) => s.kind)).toEqual(['clear-under-zeros', 'commit', 'shrink-base', 'reallocate-base', 'replace-top']);
  });
  it('refuses a base on another filesystem (no atomic rename)', () => {
    expect(kindOf(() => planExternalMerge(facts(chainOf(2), { baseOnTopFilesystem: false })))).toBe('not-supported');
  });
});

describe('host helpers', () => {
  it('escapes commas in --image-opts file names', () => {
    expect(qcow2ImageOpts('/vm/a,b.qcow2')).toBe('driver=qcow2,file.driver=file,file.filename=/vm/a,,b.qcow2');
  });
  it('finds only our own stale temporaries of the given image and purpose', () => {
    const dir = mkdtempSync(join(tmpdir(), 'prl-merge-unit-'));
    try {
      for (const name of ['.a.qcow2.convert-0123abcd.prl-tmp', '.a.qcow2.convert-xyz.prl-tmp', '.b.qcow2.convert-0123abcd.prl-tmp', '.a.qcow2.write-0123abcd.prl-tmp', 'a.qcow2']) {
        writeFileSync(join(dir, name), '');
      }
      expect(findStaleTemporaries(join(dir, 'a.qcow2'), 'convert')).toEqual([join(dir, '.a.qcow2.convert-0123abcd.prl-tmp')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
