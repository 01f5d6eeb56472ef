// merge on ploop delta chains built with qemu-img/qemu-io (format parallels) and a hand-written DiskDescriptor.xml.
// Oracle, independent of src/: the chain's content is composed from QEMU's reading of every delta (qemu-img map for
// which clusters a delta holds, qemu-img convert for their bytes), then compared with qemu-img compare.
import { execFile, spawnSync, execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { sums } from '../helpers/images.js';
import { cli, progressAt, signalAtProgress } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { holdFlock } from '../helpers/holders.js';
import { TOP_GUID, chainDescriptorXml } from '../helpers/ploop.js';
import { assertRealPloopAccepts, settleFolder } from '../helpers/real-ploop.js';

const run = promisify(execFile);

const MiB = 1024 * 1024;
const { root, fresh: freshDir } = caseFolders('prl-merge-ploop-e2e-');

function qemuIo(file: string, ...commands: string[]): void {
  execFileSync('qemu-io', ['-f', 'parallels', ...commands.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
}

interface Chain {
  dir: string;
  /** Top first, absolute. */
  files: string[];
  guids: string[];
}

/** n deltas (base root.hds, then root.hds.1 …), each writing its own pattern over part of the one below and beyond it. */
function buildChain(n: number, sizeMiB = 64, layerData = (i: number) => [`write -P ${0x10 + i} ${i * 3}M 6M`, `write -P ${0xa0 + i} ${sizeMiB - 8 + i}M 1M`]): Chain {
  const dir = freshDir();
  const files: string[] = [];
  const guids: string[] = [];
  for (let i = 0; i < n; i++) {
    const file = join(dir, i === 0 ? 'root.hds' : `root.hds.${i}`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', file, `${sizeMiB}M`]);
    qemuIo(file, ...layerData(i));
    files.unshift(file);
    guids.unshift(i === n - 1 ? TOP_GUID : `{${String(i + 1).padStart(8, '0')}-1111-2222-3333-444444444444}`);
  }
  writeFileSync(join(dir, 'DiskDescriptor.xml'), chainDescriptorXml(sizeMiB, files, guids));
  writeFileSync(join(dir, 'DiskDescriptor.xml.lck'), ''); // ploop's lock file, present on any real image
  // QEMU-made deltas are settled as a VZ7 host does at mount, so that real ploop judges only what merge writes.
  settleFolder(dir);
  return { dir, files, guids };
}

/** The chain's content as a raw file, composed from QEMU's reading of every delta (base first, upper deltas over it). */
async function compose(chain: Chain, out: string): Promise<void> {
  const fd = openSync(out, 'w');
  try {
    for (const file of [...chain.files].reverse()) {
      const raw = `${out}.layer`;
      await run('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', file, raw]);
      const extents = JSON.parse(execFileSync('qemu-img', ['map', '-f', 'parallels', '--output=json', file], { encoding: 'utf8' })) as { start: number; length: number; present: boolean }[];
      const layer = openSync(raw, 'r');
      const buf = Buffer.alloc(MiB);
      for (const extent of extents.filter((e) => e.present)) {
        for (let at = extent.start; at < extent.start + extent.length; at += MiB) {
          const n = readSync(layer, buf, 0, Math.min(MiB, extent.start + extent.length - at), at);
          writeSync(fd, buf, 0, n, at);
        }
      }
      ftruncateSync(fd, Math.max(Number(execFileSync('stat', ['-c', '%s', raw], { encoding: 'utf8' })), 0));
      closeSync(layer);
      rmSync(raw);
    }
  } finally {
    closeSync(fd);
  }
}

function sameContent(raw: string, delta: string): boolean {
  return spawnSync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'parallels', raw, delta]).status === 0;
}

function expectMerged(chain: Chain, reference: string): void {
  const base = chain.files[chain.files.length - 1]!;
  expect(sameContent(reference, base)).toBe(true);
  expect(spawnSync('qemu-img', ['check', '-f', 'parallels', base]).status).toBe(0);
  const xml = readFileSync(join(chain.dir, 'DiskDescriptor.xml'), 'utf8');
  expect(xml.match(/<Image>/g)).toHaveLength(1);
  expect(xml.match(/<Shot>/g)).toHaveLength(1);
  expect(xml).toMatch(new RegExp(`<GUID>${TOP_GUID}</GUID>\\s*<Type>Compressed</Type>\\s*<File>root.hds</File>`));
  expect(readdirSync(chain.dir).filter((n) => n.startsWith('root.hds'))).toEqual(['root.hds']);
}

describe('merge on ploop', () => {
  it.each([1, 2, 4])('folds a chain of %i delta(s) into the base with the content the chain showed', async (n) => {
    const chain = buildChain(n);
    const reference = `${chain.dir}.raw`;
    await compose(chain, reference);
    const result = await cli('merge', '--hdd', chain.dir, '--json');
    expect(result.status, result.stderr).toBe(0);
    expect(result.json!.unchanged).toBe(n === 1);
    expectMerged(chain, reference);
    await assertRealPloopAccepts(chain.dir);
    if (n > 1) expect(result.json!.hostBytesAfter as number).toBeLessThan(result.json!.hostBytesBefore as number);
    // --external means the same on ploop (the chain is the snapshots), and there is nothing left to fold.
    expect((await cli('merge', '--external', '--hdd', chain.dir, '--json')).json!.unchanged).toBe(true);
  });

  it('refuses a branched descriptor, deltas of different sizes, a locked image; --dry-run; none changes a byte', async () => {
    const cases: [string, (chain: Chain) => (() => void) | void, number, RegExp][] = [
      ['branch', (c) => {
        const xml = chainDescriptorXml(64, c.files, c.guids, `\n    <Shot>\n      <GUID>{99999999-1111-2222-3333-444444444444}</GUID>\n      <ParentGUID>${c.guids[2]}</ParentGUID>\n    </Shot>`);
        writeFileSync(join(c.dir, 'DiskDescriptor.xml'), xml);
      }, 7, /branch/],
      ['sizes differ', (c) => void execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', c.files[0]!, '128M']), 7, /virtual size/],
      ['locked', (c) => holdFlock(join(c.dir, 'DiskDescriptor.xml.lck')), 5, /locked by another process/],
      ['dry run', () => undefined, 0, /Dry run: nothing was changed[\s\S]*Fold the 2 snapshot delta/],
    ];
    for (const [name, prepare, status, message] of cases) {
      const chain = buildChain(3);
      const release = prepare(chain);
      execFileSync('sleep', ['0.3']);
      const before = sums(chain.dir);
      const result = await cli('merge', '--hdd', chain.dir, ...(name === 'dry run' ? ['-n'] : []));
      release?.();
      expect(result.status, `${name}: ${result.stderr}`).toBe(status);
      expect(result.stdout + result.stderr, name).toMatch(message);
      expect(sums(chain.dir), name).toEqual(before);
    }
  });

  it('kill -9 mid-fold leaves the chain showing the same content; the next run completes the merge', async () => {
    const chain = buildChain(2, 1024, (i) => (i === 0 ? ['write -P 0x31 0 256M'] : ['write -P 0x32 128M 512M']));
    const reference = join(root, 'ref-kill.raw');
    await compose(chain, reference);
    const descriptorBefore = sums(chain.dir)['DiskDescriptor.xml'];
    const { seen: killedAt } = await signalAtProgress(['merge', '--hdd', chain.dir], progressAt(20), 'SIGKILL');
    expect(killedAt).toBeGreaterThanOrEqual(20);
    expect(sums(chain.dir)['DiskDescriptor.xml']).toBe(descriptorBefore);
    expect(existsSync(chain.files[0]!)).toBe(true);
    const after = join(root, 'after-kill.raw');
    await compose(chain, after);
    expect(spawnSync('cmp', ['-s', reference, after]).status).toBe(0);
    rmSync(after);
    // The base may hold clusters written but not yet in its BAT: a leak, never a corruption.
    expect([0, 3]).toContain(spawnSync('qemu-img', ['check', '-f', 'parallels', chain.files[1]!]).status);
    const rerun = await cli('merge', '--hdd', chain.dir);
    expect(rerun.status, rerun.stderr).toBe(0);
    expectMerged(chain, reference);
    await assertRealPloopAccepts(chain.dir);
  });

  it('SIGINT mid-fold exits 130 and leaves the descriptor and every delta showing the same content', async () => {
    const chain = buildChain(2, 1024, (i) => (i === 0 ? ['write -P 0x41 0 128M'] : ['write -P 0x42 64M 512M']));
    const reference = join(root, 'ref-int.raw');
    await compose(chain, reference);
    const descriptorBefore = sums(chain.dir)['DiskDescriptor.xml'];
    const { seen, status } = await signalAtProgress(['merge', '--hdd', chain.dir], progressAt(20), 'SIGINT');
    expect(seen).toBeGreaterThanOrEqual(20);
    expect(status).toBe(130);
    expect(sums(chain.dir)['DiskDescriptor.xml']).toBe(descriptorBefore);
    const after = join(root, 'after-int.raw');
    await compose(chain, after);
    expect(spawnSync('cmp', ['-s', reference, after]).status).toBe(0);
  });
});
