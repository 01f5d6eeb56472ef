// merge --external and what it may touch (issue 13, items 2 and 8): shared layers are only read, and a leftover
// note is acted on only when it proves it is ours for this image and names files of the image's own folder.
import { describe, expect, it } from 'vitest';
import { linkSync, mkdirSync, mkdtempSync, statSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planExternalMerge, type ChainFacts } from '../../src/commands/merge/external.js';
import { findLeftovers } from '../../src/commands/merge/leftovers.js';
import { placeLayers } from '../../src/commands/merge/external-layers.js';

const MiB = 1024 * 1024;
const layer = (path: string): ChainFacts['chain'][number] => ({ path, virtualSizeBytes: 64 * MiB, dirty: false, corrupt: false, snapshots: 0, clusterBytes: 65536, zeroClusters: true, hostBytes: 4 * MiB });

describe('planExternalMerge with shared layers', () => {
  const chain = [layer('/vm/top.qcow2'), layer('/vm/mid.qcow2'), layer('/tpl/base.qcow2')];
  const facts: ChainFacts = {
    chain, freeBytesAtBase: 1e12, baseOnTopFilesystem: false, note: '/vm/.top.qcow2.merge-leftovers-0123abcd.prl-tmp',
    placements: [{ own: true }, { own: false, why: 'it lives outside the image folder' }],
  };
  it('pulls the data up into the top, never commits into, renames or removes the shared base', () => {
    const plan = planExternalMerge(facts);
    expect(plan.steps.map((s) => s.kind)).toEqual(['pull-up', 'note-intermediates', 'remove', 'forget-notes']);
    expect(plan.steps.filter((s) => s.kind === 'remove')).toEqual([{ kind: 'remove', path: '/vm/mid.qcow2' }]);
    expect(JSON.stringify(plan.steps)).not.toMatch(/"base":"\/tpl|"path":"\/tpl/);
    expect(plan.summary).toMatch(/left as they are .*outside the image folder/);
  });
  it('a template with its own snapshots is fine (only read); no space in the top folder is refused', () => {
    chain[2]!.snapshots = 3;
    expect(planExternalMerge(facts).steps[0]!.kind).toBe('pull-up');
    chain[2]!.snapshots = 0;
    expect(() => planExternalMerge({ ...facts, freeBytesAtTop: MiB })).toThrow(/Not enough free space/);
  });
});

/** A minimal qcow2 v3 header whose backing file name is `name` (stored at byte 200). */
function writeQcow2Naming(path: string, name: string): void {
  const header = Buffer.alloc(512);
  header.writeUInt32BE(0x514649fb, 0);
  header.writeUInt32BE(3, 4);
  header.writeBigUInt64BE(200n, 8);
  header.writeUInt32BE(Buffer.byteLength(name), 16);
  header.write(name, 200);
  writeFileSync(path, header);
}

describe('placeLayers', () => {
  it('own only inside the folder, singly linked, named by nothing else; everything below a shared layer is shared', () => {
    const root = mkdtempSync(join(tmpdir(), 'prl-place-'));
    const vm = join(root, 'vm');
    mkdirSync(vm);
    for (const name of ['top', 'mid', 'low']) writeFileSync(join(vm, name), 'x');
    writeFileSync(join(root, 'outside'), 'x');
    expect(placeLayers([join(vm, 'top'), join(vm, 'mid'), join(vm, 'low')]).map((p) => p.own)).toEqual([true, true]);
    linkSync(join(vm, 'mid'), join(root, 'mid-link'));
    expect(placeLayers([join(vm, 'top'), join(vm, 'mid'), join(vm, 'low')]).map((p) => p.own)).toEqual([false, false]);
    expect(placeLayers([join(vm, 'top'), join(root, 'outside')]).map((p) => p.own)).toEqual([false]);
    // Another qcow2 of the folder naming "low" as its backing file.
    writeQcow2Naming(join(vm, 'other'), 'low');
    expect(placeLayers([join(vm, 'top'), join(vm, 'low')])).toEqual([{ own: false, why: `${join(vm, 'other')} uses it as its backing file` }]);
  });

  it('a backing name with a colon after a slash is a path (qemu\'s rule), so the layer it names is shared', () => {
    const vm = mkdtempSync(join(tmpdir(), 'prl-place-colon-'));
    for (const name of ['top', 'low:1']) writeFileSync(join(vm, name), 'x');
    writeQcow2Naming(join(vm, 'other'), './low:1');
    expect(placeLayers([join(vm, 'top'), join(vm, 'low:1')])).toEqual([{ own: false, why: `${join(vm, 'other')} uses it as its backing file` }]);
  });
});

describe('findLeftovers', () => {
  const note = (dir: string, body: unknown): string => {
    const path = join(dir, '.top.qcow2.merge-leftovers-0123abcd.prl-tmp');
    writeFileSync(path, typeof body === 'string' ? body : JSON.stringify(body));
    return path;
  };
  const ours = (top: string, intermediates: unknown[]): unknown => {
    const stat = statSync(top, { bigint: true });
    return { writer: 'prl-disk-tool merge --external', version: 2, top: { name: 'top.qcow2', dev: String(stat.dev), ino: String(stat.ino) }, intermediates };
  };
  it.each([
    ['an old note naming an absolute path', () => ({ intermediates: ['/elsewhere/victim'] })],
    ['a note with valid JSON of another shape', () => '{"intermediates": "not a list"}'],
    ['a note for another top identity', (top: string) => ({ ...(ours(top, ['mid']) as object), top: { name: 'top.qcow2', dev: '1', ino: '2' } })],
  ])('ignores %s: nothing named, a warning', (_name, body) => {
    const dir = mkdtempSync(join(tmpdir(), 'prl-note-'));
    const top = join(dir, 'top.qcow2');
    writeFileSync(top, 'x');
    writeFileSync(join(dir, 'mid'), 'x');
    note(dir, body(top));
    const found = findLeftovers(top);
    expect(found.paths).toEqual([]);
    if (_name.startsWith('a note for')) expect(found.notes).toHaveLength(1);
    else expect(found.warnings.join(' ')).toMatch(/Ignored the note .*nothing it names was removed/);
  });
  it('a note a power cut tore (no JSON: cut short, empty, zeros) is given to the run to remove; it names nothing', () => {
    for (const torn of ['{"writer": "prl-disk-tool merge --ext', '', '\0'.repeat(512)]) {
      const dir = mkdtempSync(join(tmpdir(), 'prl-note-'));
      const top = join(dir, 'top.qcow2');
      writeFileSync(top, 'x');
      const path = note(dir, torn);
      expect(findLeftovers(top), JSON.stringify(torn)).toEqual({ notes: [path], paths: [], warnings: [] });
      // With another name (a hard link), it is not ours alone: left, with a warning.
      linkSync(path, join(dir, 'other-name'));
      const linked = findLeftovers(top);
      expect(linked.notes).toEqual([]);
      expect(linked.warnings.join(' ')).toMatch(/Ignored the note .*hard links/);
    }
  });
  it('a proven note: only plain, regular, singly linked names of the folder; one bad name and the note is left whole', () => {
    const root = mkdtempSync(join(tmpdir(), 'prl-note-'));
    const dir = join(root, 'vm');
    mkdirSync(dir);
    const top = join(dir, 'top.qcow2');
    writeFileSync(top, 'x');
    for (const name of ['mid', 'hard']) writeFileSync(join(dir, name), 'x');
    writeFileSync(join(root, 'victim'), 'x');
    linkSync(join(dir, 'hard'), join(root, 'hard-outside'));
    symlinkSync(join(root, 'victim'), join(dir, 'link'));
    note(dir, ours(top, ['mid', 'gone']));
    expect(findLeftovers(top)).toMatchObject({ paths: [join(dir, 'mid')], warnings: [] });
    for (const bad of ['../victim', join(root, 'victim'), 'link', 'hard', 'top.qcow2']) {
      note(dir, ours(top, ['mid', bad]));
      const found = findLeftovers(top);
      expect(found, bad).toMatchObject({ paths: [], notes: [] });
      expect(found.warnings, bad).toHaveLength(1);
    }
    expect(existsSync(join(root, 'victim'))).toBe(true);
  });
});
