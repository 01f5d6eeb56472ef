// stderr stays empty on every success (issue 26, class 5): the dispatcher takes any stderr byte as a failure, so a
// run that first completes what an interrupted one left (a ploop delta in use, a merge's leftovers, a note it must
// ignore) says so on stdout, and only there. No appliance.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseFolders } from '../helpers/dirs.js';
import { mergeNote, ploopDelta, ploopFolder, qcow2, writeAt } from '../helpers/hostile-images.js';
import { cli } from './resize-support.js';

const { fresh } = caseFolders('prl-stderr-success-');

function inUsePloop(): string {
  const folder = ploopFolder(fresh());
  const delta = ploopDelta(join(folder, 'root.hds'));
  execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x22 0 4M', delta], { stdio: 'ignore' });
  writeAt(delta, 44, Buffer.from('Ynot', 'latin1'));
  return folder;
}

async function succeedsQuietly(args: string[], says: RegExp): Promise<void> {
  const result = await cli(args);
  expect(result.code, result.stderr).toBe(0);
  expect(result.stderr, `${args.join(' ')} wrote on stderr`).toBe('');
  expect(result.stdout).toMatch(says);
}

describe('a success writes nothing on stderr, also when it completes an interrupted run first', () => {
  it('ploop resize and convert complete a delta left in use', async () => {
    await succeedsQuietly(['resize', '--hdd', inUsePloop(), '--size', '128M'], /interrupted operation on the ploop image first/);
    await succeedsQuietly(['convert', '--hdd', inUsePloop(), '--plain'], /Converted .* to plain/);
    await succeedsQuietly(['resize', '--info', '--hdd', inUsePloop()], /Size:/);
  });

  it('ploop merge removes a merged delta an interrupted merge left, and its note', async () => {
    const folder = ploopFolder(fresh());
    ploopDelta(join(folder, 'root.hds'));
    ploopDelta(join(folder, 'root.hds.merged'));
    mergeNote(folder, 'root.hds', ['root.hds.merged']);
    await succeedsQuietly(['merge', '--hdd', folder], /interrupted merge left/);
  });

  it('merge --external removes the intermediates a killed run left; a note that is not ours is only reported', async () => {
    // What such a kill leaves: the top is already the merged, standalone image; the intermediate is still there.
    const folder = fresh();
    const top = qcow2(join(folder, 'top.qcow2'));
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 1M', top], { stdio: 'ignore' });
    qcow2(join(folder, 'layer1.qcow2'));
    mergeNote(folder, 'top.qcow2', ['layer1.qcow2']);
    await succeedsQuietly(['merge', '--external', '--hdd', top], /Removed 1 intermediate image\(s\) that an interrupted merge --external left/);
    mergeNote(folder, 'top.qcow2', '{"intermediates": "not a list"}');
    await succeedsQuietly(['merge', '--external', '--hdd', top], /Ignored the note .*nothing it names was removed/);
  });
});
