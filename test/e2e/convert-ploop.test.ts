// convert --plain / --expanding on ploop images built with qemu-img/qemu-io (format parallels): host allocation within
// bounds (st_blocks), content checked with qemu-img compare against a raw copy made before, DiskDescriptor.xml's
// Preallocated, refusals and --dry-run byte-for-byte, kill -9 mid-allocation then a run that completes.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sums, allocated } from '../helpers/images.js';
import { cli } from '../helpers/cli.js';

const CLI = join(process.cwd(), 'dist/src/cli/main.js');
const MiB = 1024 * 1024;
const TOP_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
const BASE_GUID = '{12345678-1111-2222-3333-444444444444}';
const ROOT_GUID = '{00000000-0000-0000-0000-000000000000}';
const root = mkdtempSync(join(tmpdir(), 'prl-convert-ploop-e2e-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
function freshDir(): string {
  const dir = join(root, `case${++counter}`);
  execFileSync('mkdir', ['-p', dir]);
  return dir;
}
function sameContent(raw: string, delta: string): boolean {
  return spawnSync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'parallels', raw, delta]).status === 0;
}

function descriptor(sizeMiB: number, shots: { guid: string; file: string; parent: string }[]): string {
  const sectors = sizeMiB * 2048;
  return `<?xml version="1.0"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters>
    <Disk_size>${sectors}</Disk_size>
    <Cylinders>${sectors / 512}</Cylinders>
    <Heads>16</Heads>
    <Sectors>32</Sectors>
    <Padding>0</Padding>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>${sectors}</End>
      <Blocksize>2048</Blocksize>
${shots.map((s) => `      <Image>\n        <GUID>${s.guid}</GUID>\n        <Type>Compressed</Type>\n        <File>${s.file}</File>\n      </Image>`).join('\n')}
    </Storage>
  </StorageData>
  <Snapshots>
    <TopGUID>${TOP_GUID}</TopGUID>
${shots.map((s) => `    <Shot>\n      <GUID>${s.guid}</GUID>\n      <ParentGUID>${s.parent}</ParentGUID>\n    </Shot>`).join('\n')}
  </Snapshots>
</Parallels_disk_image>
`;
}

/** One delta of `sizeMiB` with patterned data and a range of written zero bytes; returns the folder and a raw reference. */
function buildPloop(sizeMiB: number, commands: string[]): { dir: string; delta: string; reference: string } {
  const dir = freshDir();
  const delta = join(dir, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, `${sizeMiB}M`]);
  execFileSync('qemu-io', ['-f', 'parallels', ...commands.flatMap((c) => ['-c', c]), delta], { stdio: 'ignore' });
  writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptor(sizeMiB, [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_GUID }]));
  writeFileSync(join(dir, 'DiskDescriptor.xml.lck'), '');
  const reference = join(root, `ref-${counter}.raw`);
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
        writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptor(256, [
          { guid: TOP_GUID, file: 'root.hds.1', parent: BASE_GUID },
          { guid: BASE_GUID, file: 'root.hds', parent: ROOT_GUID },
        ]));
      }, 8, /merge --hdd/],
      ['locked', (dir) => {
        const child = spawn('flock', ['-x', join(dir, 'DiskDescriptor.xml.lck'), 'sleep', '60'], { stdio: 'ignore' });
        return () => child.kill('SIGKILL');
      }, 5, /locked by another process/],
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
    const child = spawn('node', [CLI, 'convert', '--plain', '--hdd', dir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let killedAt = -1;
    let buffer = '';
    await new Promise<void>((resolve) => {
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        buffer += chunk;
        const lines = buffer.split('\n');
        buffer = lines.pop() ?? '';
        for (const line of lines) {
          const event = JSON.parse(line) as { event: string; step?: string; percent?: number };
          if (event.event === 'progress' && event.step === 'Allocating every cluster' && (event.percent ?? 0) >= 20 && killedAt < 0) {
            killedAt = event.percent!;
            child.kill('SIGKILL');
          }
        }
      });
      child.on('close', () => resolve());
    });
    expect(killedAt).toBeGreaterThanOrEqual(20);
    expect(sameContent(reference, delta)).toBe(true);
    const rerun = await cli('convert', '--plain', '--hdd', dir);
    expect(rerun.status, rerun.stderr).toBe(0);
    expect(sameContent(reference, delta)).toBe(true);
    expect(spawnSync('qemu-img', ['check', '-f', 'parallels', delta]).status).toBe(0);
    expect(allocated(delta)).toBeGreaterThanOrEqual(2048 * MiB);
    expect(allocated(delta)).toBeLessThanOrEqual(2048 * MiB * 1.01 + MiB);
  });
});
