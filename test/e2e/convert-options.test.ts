// convert keeps every creation option of a qcow2 image (issue 26, class 4): a compat=0.10 (version 2) image stays
// version 2 both ways, and a version 3 image keeps its cluster size, refcount width, lazy refcounts, extended L2
// entries and compression type. Oracle: qemu-img info and compare. No appliance.
import { execFileSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseFolders } from '../helpers/dirs.js';
import { cli } from './resize-support.js';

const { fresh } = caseFolders('prl-convert-options-');

function specific(file: string): Record<string, unknown> {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' })) as Record<string, unknown>;
  const data = ((info['format-specific'] as Record<string, unknown>).data ?? {}) as Record<string, unknown>;
  return { 'cluster-size': info['cluster-size'], ...data };
}

/** Converts to plain and back, checking after each run that the options and the guest content are kept. */
async function roundTrip(options: string, expected: Record<string, unknown>): Promise<void> {
  const folder = fresh();
  const disk = join(folder, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, disk, '64M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5c 1M 3M', '-c', 'write -z 8M 1M', disk], { stdio: 'ignore' });
  copyFileSync(disk, join(folder, 'reference.qcow2'));
  for (const target of ['--plain', '--expanding']) {
    const result = await cli(['convert', '--hdd', disk, target]);
    expect(result.code, result.stderr).toBe(0);
    expect(specific(disk), `after convert ${target} of a ${options} image`).toMatchObject(expected);
    execFileSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', disk, join(folder, 'reference.qcow2')]);
  }
}

describe('convert keeps the creation options of a qcow2 image', () => {
  it('compat=0.10 stays version 2, with its cluster size', async () => {
    await roundTrip('compat=0.10,cluster_size=128K', { compat: '0.10', 'cluster-size': 131072 });
  });

  it('a version 3 image keeps refcount width, lazy refcounts, extended L2 and zstd compression', async () => {
    await roundTrip('compat=1.1,cluster_size=32K,refcount_bits=4,lazy_refcounts=on,extended_l2=on,compression_type=zstd', {
      compat: '1.1', 'cluster-size': 32768, 'refcount-bits': 4, 'lazy-refcounts': true, 'extended-l2': true, 'compression-type': 'zstd',
    });
  });
});
