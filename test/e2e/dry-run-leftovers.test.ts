// Dry runs with leftovers present (issue 26, class 8): whatever the folder holds (a killed run's temporaries, a
// merge note with the files it names, a ploop delta with the in-use mark), every -n run exits 0, prints nothing on
// stderr, and leaves the folder byte-identical: nothing removed, completed, recovered or added (the ploop lock file
// excepted). One appliance start: compact -n on the ploop folder.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseFolders } from '../helpers/dirs.js';
import { mergeNote, ploopDelta, ploopFolder, qcow2, writeAt } from '../helpers/hostile-images.js';
import { fingerprint, fingerprintDiff } from '../reliability/harness.js';
import { cli } from './resize-support.js';

const { fresh } = caseFolders('prl-dry-leftovers-');

/** What a killed run of each command leaves beside `image`: temporaries with our names (content: a qcow2 overlay). */
function staleTemporaries(folder: string, image: string): void {
  for (const purpose of ['compact-overlay', 'resize', 'convert']) {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', image.endsWith('.hds') ? 'parallels' : 'qcow2', '-b', image, join(folder, `.${image}.${purpose}-0123abcd.prl-tmp`)], { cwd: folder });
  }
}

async function expectDryRunsKeep(folder: string, hdd: string, runs: readonly (readonly string[])[]): Promise<void> {
  const problems: string[] = [];
  for (const run of runs) {
    const before = fingerprint(folder);
    const result = await cli([run[0]!, '--hdd', hdd, ...run.slice(1)]);
    const after = fingerprint(folder);
    after.delete('DiskDescriptor.xml.lck');
    before.delete('DiskDescriptor.xml.lck');
    const changes = fingerprintDiff(before, after);
    if (result.code !== 0) problems.push(`${run.join(' ')}: exit ${result.code}: ${result.stderr.trim()}`);
    else if (result.stderr !== '') problems.push(`${run.join(' ')}: stderr on success: ${result.stderr.trim()}`);
    if (changes.length > 0) problems.push(`${run.join(' ')}: ${changes.join(', ')}`);
  }
  expect(problems).toEqual([]);
}

describe('dry runs with leftovers present leave the folder byte-identical', () => {
  it('qcow2: stale overlays and temporaries, a merge note and the intermediate it names', async () => {
    const folder = fresh();
    const disk = qcow2(join(folder, 'disk.qcow2'));
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', disk], { stdio: 'ignore' });
    qcow2(join(folder, 'layer1.qcow2'));
    mergeNote(folder, 'disk.qcow2', ['layer1.qcow2']);
    staleTemporaries(folder, 'disk.qcow2');
    await expectDryRunsKeep(folder, disk, [
      ['resize', '--size', '128M', '-n'],
      ['resize', '--size', '32M', '-n'],
      ['convert', '--plain', '-n'],
      ['convert', '--expanding', '-n'],
      ['merge', '-n'],
      ['merge', '--external', '-n'],
    ]);
  });

  /** A ploop folder whose delta was left in use, with a merge note, the merged delta it names, and stale overlays. */
  function ploopWithLeftovers(): string {
    const folder = ploopFolder(fresh());
    const delta = ploopDelta(join(folder, 'root.hds'));
    execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x22 0 4M', delta], { stdio: 'ignore' });
    // The in-use mark of an interrupted change ("Ynot" at byte 44): only a real run may recover it.
    writeAt(delta, 44, Buffer.from('Ynot', 'latin1'));
    ploopDelta(join(folder, 'root.hds.merged'));
    mergeNote(folder, 'root.hds', ['root.hds.merged']);
    staleTemporaries(folder, 'root.hds');
    return folder;
  }

  it('ploop: a delta left in use, a merge note with a merged delta, stale overlays', async () => {
    const folder = ploopWithLeftovers();
    await expectDryRunsKeep(folder, folder, [
      ['resize', '--size', '128M', '-n'],
      ['resize', '--size', '32M', '-n'],
      ['convert', '--plain', '-n'],
      ['convert', '--expanding', '-n'],
      ['merge', '-n'],
    ]);
  });

  it('ploop compact -n (the appliance trims a throwaway overlay) with the same leftovers', async () => {
    const folder = ploopWithLeftovers();
    await expectDryRunsKeep(folder, folder, [['compact', '-n']]);
  });
});
