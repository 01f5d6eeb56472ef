// ploop sizes that end inside a cluster (issue 26, class 1), through the CLI and without the appliance: a grow to
// `--size 100000K` on 1 MiB clusters must leave an image the tool itself reads again, and a shrink to a size inside a
// cluster must keep the data in the kept part of that cluster. Oracles: qemu-io patterns, qemu-img check, real ploop.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseFolders } from '../helpers/dirs.js';
import { ploopDescriptor } from '../helpers/hostile-images.js';
import { assertRealPloopAccepts, settleFolder } from '../helpers/real-ploop.js';
import { cli } from './resize-support.js';

const { fresh } = caseFolders('prl-ploop-partial-');
const K = 1024;
const MiB = 1024 * K;

/** qemu-io on the delta, by format name; throws (with qemu-io's words) when a pattern read differs. */
function qemuIo(delta: string, command: string): string {
  return execFileSync('qemu-io', ['-f', 'parallels', '-c', command, delta], { encoding: 'utf8' });
}

function expectPattern(delta: string, byte: number, offset: number, length: number): void {
  const out = qemuIo(delta, `read -P 0x${byte.toString(16)} ${offset} ${length}`);
  expect(out, `${length} bytes at ${offset} read as 0x${byte.toString(16)}`).not.toMatch(/Pattern verification failed/);
}

function qemuCheck(delta: string): void {
  execFileSync('qemu-img', ['check', '-f', 'parallels', delta], { stdio: 'pipe' });
}

/**
 * A 64 MiB ploop folder on 1 MiB clusters: an MBR whose one partition (unknown content: data) ends at
 * `partitionEndBytes`, every byte of it 0x61; everything after the partition is 0x7a (allocated, outside every partition).
 */
function ploopWithPartition(partitionEndBytes: number): { folder: string; delta: string } {
  const folder = fresh();
  const raw = join(folder, 'disk.raw');
  const delta = join(folder, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, '64M']);
  execFileSync('sfdisk', ['-q', raw], { input: `label: dos\nstart=2048, size=${partitionEndBytes / 512 - 2048}, type=83\n` });
  execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P 0x61 ${MiB} ${partitionEndBytes - MiB}`, '-c', `write -P 0x7a ${partitionEndBytes} ${64 * MiB - partitionEndBytes}`, raw], { stdio: 'ignore' });
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', '-o', 'cluster_size=1M', raw, delta]);
  execFileSync('rm', [raw]);
  writeFileSync(join(folder, 'DiskDescriptor.xml'), ploopDescriptor(['root.hds']));
  settleFolder(folder);
  return { folder, delta };
}

describe('ploop sizes inside a cluster (no appliance)', () => {
  it('a shrink to a size inside a cluster keeps the data of the kept part of that cluster', async () => {
    const end = 29 * MiB + 512 * K;
    const { folder, delta } = ploopWithPartition(end);
    const shrunk = await cli(['resize', '--hdd', folder, '--size', '30208K']);
    expect(shrunk.code, shrunk.stderr).toBe(0);
    expect(shrunk.stderr).toBe('');
    qemuCheck(delta);
    // The last cluster (29 MiB .. 30 MiB) is half kept: its first half is the end of the partition.
    expectPattern(delta, 0x61, MiB, end - MiB);
    const limits = await cli(['resize', '--info', '--json', '--hdd', folder]);
    expect(limits.code, limits.stderr).toBe(0);
    expect(JSON.parse(limits.stdout).size).toBe(end);
    await assertRealPloopAccepts(folder);
  });

  it('a grow to 100000K on 1 MiB clusters leaves an image every command reads, its new tail zeros', async () => {
    const { folder, delta } = ploopWithPartition(60 * MiB);
    const grown = await cli(['resize', '--hdd', folder, '--size', '100000K']);
    expect(grown.code, grown.stderr).toBe(0);
    qemuCheck(delta);
    expectPattern(delta, 0x61, MiB, 59 * MiB);
    expectPattern(delta, 0x7a, 60 * MiB, 4 * MiB);
    expectPattern(delta, 0, 64 * MiB, 100000 * K - 64 * MiB);
    await assertRealPloopAccepts(folder);
    const limits = await cli(['resize', '--info', '--json', '--hdd', folder]);
    expect(limits.code, limits.stderr).toBe(0);
    expect(JSON.parse(limits.stdout).size).toBe(100000 * K);
    // The tool takes its own result as input: grow on, from inside a cluster, and the hidden tail stays zeros.
    const again = await cli(['resize', '--hdd', folder, '--size', '100M']);
    expect(again.code, again.stderr).toBe(0);
    qemuCheck(delta);
    expectPattern(delta, 0, 64 * MiB, 36 * MiB);
    await assertRealPloopAccepts(folder);
  });
});
