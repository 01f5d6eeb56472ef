// The copies never allocate an all-zero cluster (issue 19): merge's ploop fold, the resize commit into ploop and
// convert --expanding (merge --external's commit is not covered yet: see docs/merge-convert.md), on chains written with qemu-io where an overlay holds zeros as data. Content is compared with
// a raw export taken before; a plain base stays fully allocated. Oracle: qemu-img map/convert/compare only.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { TOP_GUID, chainDescriptorXml, descriptorXml } from '../helpers/ploop.js';
import { commitOverlayIntoPloop } from '../../src/commands/resize/ploop.js';

const MiB = 1024 * 1024;
const { fresh } = caseFolders('prl-sparse-copies-e2e-');

type Fmt = 'qcow2' | 'parallels';
interface Extent { start: number; length: number; data: boolean; depth: number; offset?: number }

const img = (...args: string[]): string => execFileSync('qemu-img', args, { encoding: 'utf8' });
const io = (fmt: Fmt, file: string, ...commands: string[]): void =>
  void execFileSync('qemu-io', ['-f', fmt, ...commands.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
const extents = (fmt: Fmt, file: string): Extent[] => JSON.parse(img('map', '--output=json', '-f', fmt, file)) as Extent[];
/** Bytes of data clusters in the file itself. */
const dataBytes = (fmt: Fmt, file: string): number => extents(fmt, file).filter((e) => e.data && e.depth === 0).reduce((s, e) => s + e.length, 0);
const exportRaw = (fmt: Fmt, file: string, to: string): string => (img('convert', '-f', fmt, '-O', 'raw', file, to), to);
const sameAs = (fmt: Fmt, file: string, raw: string): boolean => {
  try {
    img('compare', '-f', fmt, '-F', 'raw', file, raw);
    return true;
  } catch {
    return false;
  }
};

describe('copies never allocate an all-zero cluster', () => {
  it('convert --expanding keeps only the non-zero clusters of a plain image', async () => {
    const dir = fresh();
    const file = join(dir, 'plain.qcow2');
    img('create', '-q', '-f', 'qcow2', '-o', 'preallocation=falloc', file, '64M');
    io('qcow2', file, 'write -P 0 0 32M', 'write -P 0x22 40M 1M');
    const before = exportRaw('qcow2', file, join(dir, 'before.raw'));
    const result = await cli('convert', '--expanding', '--hdd', file, '--json');
    expect(result.status, result.stderr).toBe(0);
    expect(sameAs('qcow2', file, before)).toBe(true);
    expect(dataBytes('qcow2', file)).toBe(MiB);
  });

  it('merge on ploop: the fold neither allocates zeros nor keeps base clusters it overwrote with zeros', async () => {
    const dir = fresh();
    const base = join(dir, 'root.hds');
    const top = join(dir, 'root.hds.1');
    for (const file of [base, top]) img('create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', file, '64M');
    io('parallels', base, 'write -P 0x11 0 4M');
    io('parallels', top, 'write -P 0 0 2M', 'write -P 0 8M 4M', 'write -P 0x55 20M 1M');
    writeFileSync(join(dir, 'DiskDescriptor.xml'), chainDescriptorXml(64, [top, base], [TOP_GUID, '{11111111-2222-3333-4444-555555555555}']));
    // The chain as the guest sees it: the top over the base (qemu-img reads a delta alone, so compose by hand).
    const composed = join(dir, 'before.raw');
    exportRaw('parallels', base, composed);
    const raw = join(dir, 'top.raw');
    exportRaw('parallels', top, raw);
    for (const e of extents('parallels', top).filter((x) => x.data)) {
      const at = e.start / MiB;
      execFileSync('dd', [`if=${raw}`, `of=${composed}`, 'bs=1M', `skip=${at}`, `seek=${at}`, `count=${e.length / MiB}`, 'conv=notrunc', 'status=none']);
    }
    const result = await cli('merge', '--hdd', dir, '--json');
    expect(result.status, result.stderr).toBe(0);
    expect(sameAs('parallels', base, composed)).toBe(true);
    // 2-4 MiB of the base and the top's 1 MiB of 0x55; nothing for the zeros.
    expect(dataBytes('parallels', base)).toBe(3 * MiB);
  });

  for (const preallocated of [false, true]) {
    it(`the resize commit into ploop ${preallocated ? 'keeps every cluster of a preallocated image' : 'releases the clusters it overwrote with zeros'}`, async () => {
      const dir = fresh();
      const delta = join(dir, 'root.hds');
      const raw = join(dir, 'disk.raw');
      img('create', '-q', '-f', 'raw', raw, '16M');
      execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', raw], { stdio: 'ignore' });
      img('convert', '-f', 'raw', '-O', 'parallels', '-o', 'cluster_size=1M', ...(preallocated ? ['-S', '0'] : []), raw, delta);
      writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: 16 * 2048, blockSizeSectors: 2048, preallocated, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: '{00000000-0000-0000-0000-000000000000}' }] }));
      // The appliance's writes, as the overlay holds them: zeros over 0-2 MiB (data) and 8-10 MiB (unallocated).
      const overlay = join(dir, 'overlay.qcow2');
      img('create', '-q', '-f', 'qcow2', '-b', delta, '-F', 'parallels', overlay);
      io('qcow2', overlay, 'write -P 0 0 2M', 'write -P 0 8M 2M', 'write -P 0x33 12M 1M');
      const after = exportRaw('qcow2', overlay, join(dir, 'after.raw'));
      const progress = { step: () => undefined, update: () => undefined, done: () => undefined };
      await commitOverlayIntoPloop(overlay, dir, progress, () => undefined);
      expect(sameAs('parallels', delta, after)).toBe(true);
      expect(dataBytes('parallels', delta)).toBe(preallocated ? 16 * MiB : 3 * MiB);
      img('check', '-f', 'parallels', delta);
    });
  }
});
