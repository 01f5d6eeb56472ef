// snapshotSharedRanges on images made by qemu-img and qemu-io: the oracle is what each write did to sharing.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { snapshotSharedRanges } from '../../../src/formats/qcow2/sharing.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'qcow2-sharing-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function image(name: string, options: string, ...steps: string[][]): string {
  const file = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, file, '64M']);
  for (const step of steps) {
    if (step[0] === 'snapshot') execFileSync('qemu-img', ['snapshot', '-c', step[1]!, file]);
    else execFileSync('qemu-io', ['-f', 'qcow2', '-c', step.join(' '), file], { stdio: 'ignore' });
  }
  return file;
}

describe('snapshotSharedRanges', () => {
  it('is empty without snapshots', () => {
    expect(snapshotSharedRanges(image('none.qcow2', 'cluster_size=65536', ['write', '-P', '1', '0', '4M']))).toEqual([]);
  });

  it('lists the data a snapshot shares, minus what was rewritten or written after it', () => {
    const file = image(
      'one.qcow2',
      'cluster_size=65536',
      ['write', '-P', '1', '0', '4M'],
      ['snapshot', 's1'],
      ['write', '-P', '2', '1M', '1M'], // copy-on-write: these clusters are the current state's own now
      ['write', '-P', '3', '8M', '2M'], // new data, never shared
    );
    expect(snapshotSharedRanges(file)).toEqual([
      { start: 0, length: MiB },
      { start: 2 * MiB, length: 2 * MiB },
    ]);
  });

  it('sees sharing again after the last snapshot is gone: none', () => {
    const file = image('gone.qcow2', 'cluster_size=65536', ['write', '-P', '1', '0', '4M'], ['snapshot', 's1']);
    execFileSync('qemu-img', ['snapshot', '-d', 's1', file]);
    expect(snapshotSharedRanges(file)).toEqual([]);
  });

  it('works with other cluster sizes and says undefined for extended L2 entries', () => {
    const small = image('small.qcow2', 'cluster_size=4096', ['write', '-P', '1', '0', '1M'], ['snapshot', 's1'], ['write', '-P', '2', '0', '4k']);
    expect(snapshotSharedRanges(small)).toEqual([{ start: 4096, length: MiB - 4096 }]);
    const extended = image('ext.qcow2', 'cluster_size=65536,extended_l2=on', ['write', '-P', '1', '0', '1M'], ['snapshot', 's1']);
    expect(snapshotSharedRanges(extended)).toBeUndefined();
  });

  it('refuses a file that is not qcow2 with a clear error', () => {
    const raw = join(dir, 'raw.img');
    execFileSync('truncate', ['-s', '1M', raw]);
    expect(() => snapshotSharedRanges(raw)).toThrow(/not a readable qcow2 image: no qcow2 signature/);
  });
});
