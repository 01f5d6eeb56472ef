// The in-use protocol seen from outside: a ploop operation stopped in the middle of its writes leaves the top
// delta marked in use ("Ynot"), so ploop (and the next run) knows the delta was open for writing; the finished
// operation leaves it clear (0). The kill point is a durable change counted by the shim (harness.ts).
import { writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseFolders } from '../helpers/dirs.js';
import { descriptorXml, IN_USE_OPEN, readDeltaTable, ROOT_PARENT, TOP_GUID } from '../helpers/ploop.js';
import { countChanges, runAndKillAt } from './harness.js';

const { fresh } = caseFolders('prl-in-use-');

function ploopWithData(): { folder: string; delta: string } {
  const folder = join(fresh(), 'img');
  mkdirSync(folder);
  const delta = join(folder, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64K', delta, '64M']);
  execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 8M', delta], { stdio: 'ignore' });
  writeFileSync(join(folder, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: 64 * 2048, blockSizeSectors: 128, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }));
  writeFileSync(join(folder, 'DiskDescriptor.xml.lck'), '');
  return { folder, delta };
}

describe('the in-use mark while a ploop grow writes', () => {
  it('is set at the middle kill point of a grow that moves clusters, and clear after the whole run', async () => {
    // 300 GiB of 64 KiB clusters need a BAT far past the data start: the grow moves every data cluster.
    const args = (folder: string): string[] => ['resize', '--hdd', folder, '--size', '300G'];
    const measured = ploopWithData();
    const { outcome, changes } = await countChanges(args(measured.folder), measured.folder);
    expect(outcome.code, outcome.stderr).toBe(0);
    expect(readDeltaTable(measured.delta).inUse).toBe(0);
    expect(changes).toBeGreaterThan(20);
    const stopped = ploopWithData();
    const kill = await runAndKillAt(args(stopped.folder), stopped.folder, Math.floor(changes / 2));
    expect(kill.killed).toBe(true);
    expect(readDeltaTable(stopped.delta).inUse).toBe(IN_USE_OPEN);
  });
});
