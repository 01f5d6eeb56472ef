// convert --plain / --expanding on ploop images built with qemu-img/qemu-io (format parallels): host allocation within
// bounds (st_blocks), content checked with qemu-img compare against a raw copy made before, DiskDescriptor.xml's
// Preallocated, refusals and --dry-run byte-for-byte, kill -9 mid-allocation then a run that completes.
import { spawnSync, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sums, allocated } from '../helpers/images.js';
import { cli, progressAt, signalAtProgress } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { holdFlock } from '../helpers/holders.js';
import { BASE_GUID, TOP_GUID, chainDescriptorXml } from '../helpers/ploop.js';
import { assertRealPloopAccepts, settleFolder } from '../helpers/real-ploop.js';

const MiB = 1024 * 1024;
const { fresh: freshDir } = caseFolders('prl-convert-ploop-e2e-');

function sameContent(raw: string, delta: string): boolean {
  return spawnSync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'parallels', raw, delta]).status === 0;
}

/** One delta of `sizeMiB` with patterned data and a range of written zero bytes; returns the folder and a raw reference. */
function buildPloop(sizeMiB: number, commands: string[]): { dir: string; delta: string; reference: string } {
  const dir = freshDir();
  const delta = join(dir, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, `${sizeMiB}M`]);
  execFileSync('qemu-io', ['-f', 'parallels', ...commands.flatMap((c) => ['-c', c]), delta], { stdio: 'ignore' });
  writeFileSync(join(dir, 'DiskDescriptor.xml'), chainDescriptorXml(sizeMiB, ['root.hds'], [TOP_GUID]));
  writeFileSync(join(dir, 'DiskDescriptor.xml.lck'), '');
  // QEMU-made deltas are settled as a VZ7 host does at mount, so that real ploop judges only what convert writes.
  settleFolder(dir);
  // Beside the folder, not in it: the refusal cases compare the folder's checksums.
  const reference = `${dir}.raw`;
  execFileSync('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', delta, reference]);
  return { dir, delta, reference };
}

const DATA = ['write -P 0x5a 0 32M', 'write -P 0x3c 128M 16M', 'write -P 0 200M 8M'];

describe('convert on ploop', () => {
  it('--plain then --expanding: allocation within bounds, content identical, Preallocated follows, repeat is a no-op', async () => {
    const { dir, delta, reference } = buildPloop(256, DATA);
    const virtual = 256 * MiB;
    const plain = await cli('convert', '--plain', '--hdd', dir, '--json');
    expect(plain.status, plain.stderr).toBe(0);
    expect(allocated(delta)).toBeGreaterThanOrEqual(virtual);
    // Metadata: the header and BAT, padded to the first 1 MiB cluster.
    expect(allocated(delta)).toBeLessThanOrEqual(virtual + MiB + virtual / 100);
    expect(sameContent(reference, delta)).toBe(true);
    expect(spawnSync('qemu-img', ['check', '-f', 'parallels', delta]).status).toBe(0);
    expect(readFileSync(join(dir, 'DiskDescriptor.xml'), 'utf8')).toMatch(/<Preallocated>1<\/Preallocated>/);
    await assertRealPloopAccepts(dir);

    const before = sums(dir);
    const again = await cli('convert', '--plain', '--hdd', dir, '--json');
    expect(again.status).toBe(0);
    expect(again.json!.unchanged).toBe(true);
    expect(sums(dir)).toEqual(before);

    const expanding = await cli('convert', '--expanding', '--hdd', dir, '--json');
    expect(expanding.status, expanding.stderr).toBe(0);
    const dataBytes = 48 * MiB; // the 8 MiB of written zero bytes are released too
    expect(allocated(delta)).toBeGreaterThanOrEqual(dataBytes);
    expect(allocated(delta)).toBeLessThanOrEqual(dataBytes * 1.02 + 2 * MiB);
    expect(sameContent(reference, delta)).toBe(true);
    expect(spawnSync('qemu-img', ['check', '-f', 'parallels', delta]).status).toBe(0);
    expect(readFileSync(join(dir, 'DiskDescriptor.xml'), 'utf8')).not.toMatch(/Preallocated/);
    await assertRealPloopAccepts(dir);
    const noop = await cli('convert', '--expanding', '--hdd', dir, '--json');
    expect(noop.json!.unchanged).toBe(true);
  });

  it('--plain fills the holes a sparse copy left inside allocated clusters (full BAT, file not fully allocated)', async () => {
    const { dir, delta, reference } = buildPloop(256, DATA);
    expect((await cli('convert', '--plain', '--hdd', dir)).status).toBe(0);
    execFileSync('cp', ['--sparse=always', delta, `${delta}.copy`]);
    execFileSync('mv', [`${delta}.copy`, delta]);
    expect(allocated(delta)).toBeLessThan(256 * MiB);
    const result = await cli('convert', '--plain', '--hdd', dir, '--json');
    expect(result.status, result.stderr).toBe(0);
    expect(result.json!.unchanged).toBe(false);
    expect(allocated(delta)).toBeGreaterThanOrEqual(256 * MiB);
    expect(allocated(delta)).toBeLessThanOrEqual(256 * MiB + MiB + (256 * MiB) / 100);
    expect(sameContent(reference, delta)).toBe(true);
    expect(spawnSync('qemu-img', ['check', '-f', 'parallels', delta]).status).toBe(0);
  });

  it('refuses snapshot deltas and a locked image; --dry-run; none changes a byte', async () => {
    const cases: [string, (dir: string) => (() => void) | void, number, RegExp][] = [
      ['snapshots', (dir) => {
        execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', join(dir, 'root.hds.1'), '256M']);
        writeFileSync(join(dir, 'DiskDescriptor.xml'), chainDescriptorXml(256, ['root.hds.1', 'root.hds'], [TOP_GUID, BASE_GUID]));
      }, 8, /merge --hdd/],
      ['locked', (dir) => holdFlock(join(dir, 'DiskDescriptor.xml.lck')), 5, /locked by another process/],
      ['dry run', () => undefined, 0, /Dry run: nothing was changed[\s\S]*Allocate/],
    ];
    for (const [name, prepare, status, message] of cases) {
      const { dir } = buildPloop(256, DATA);
      const release = prepare(dir);
      execFileSync('sleep', ['0.3']);
      const before = sums(dir);
      const result = await cli('convert', '--plain', '--hdd', dir, ...(name === 'dry run' ? ['-n'] : []));
      release?.();
      expect(result.status, `${name}: ${result.stderr}`).toBe(status);
      expect(result.stdout + result.stderr, name).toMatch(message);
      expect(sums(dir), name).toEqual(before);
    }
  });

  it('kill -9 mid-allocation leaves the same content; the next run completes the conversion', async () => {
    const { dir, delta, reference } = buildPloop(2048, ['write -P 0x71 0 128M', 'write -P 0x72 1536M 64M']);
    const { seen: killedAt } = await signalAtProgress(['convert', '--plain', '--hdd', dir], progressAt(20, 'Allocating every cluster'), 'SIGKILL');
    expect(killedAt).toBeGreaterThanOrEqual(20);
    expect(sameContent(reference, delta)).toBe(true);
    const rerun = await cli('convert', '--plain', '--hdd', dir);
    expect(rerun.status, rerun.stderr).toBe(0);
    expect(sameContent(reference, delta)).toBe(true);
    expect(spawnSync('qemu-img', ['check', '-f', 'parallels', delta]).status).toBe(0);
    await assertRealPloopAccepts(dir);
    expect(allocated(delta)).toBeGreaterThanOrEqual(2048 * MiB);
    expect(allocated(delta)).toBeLessThanOrEqual(2048 * MiB * 1.01 + MiB);
  });
});
