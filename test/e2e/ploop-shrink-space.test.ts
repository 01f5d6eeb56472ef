// A ploop shrink leaves no dead clusters in the delta: clusters past the new end (here: data outside every
// partition, and the old backup GPT) leave the file, not only the BAT, so the delta is no larger than what its BAT
// still maps. No appliance: a plain resize of a GPT disk.
import { execFileSync } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { descriptorXml, readDeltaTable, ROOT_PARENT, TOP_GUID } from '../helpers/ploop.js';

const { fresh } = caseFolders('prl-ploop-shrink-space-');
const MiB = 1024 * 1024;

describe('ploop shrink', () => {
  it('drops the clusters past the new end from the file, and keeps the partition intact', async () => {
    const dir = fresh();
    const raw = join(dir, 'disk.raw');
    execFileSync('truncate', ['-s', '256M', raw]);
    execFileSync('sgdisk', ['-n', '1:2048:+32M', '-t', '1:8300', raw], { stdio: 'ignore' });
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 32M', '-c', 'write -P 0x77 100M 4M', raw], { stdio: 'ignore' });
    const image = join(dir, 'img');
    execFileSync('mkdir', [image]);
    const delta = join(image, 'root.hds');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', '-o', 'cluster_size=1M', raw, delta]);
    writeFileSync(join(image, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: 256 * 2048, blockSizeSectors: 2048, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }));
    const result = await runCli(['resize', '--hdd', image, '--size', '64M']);
    expect(result.code, result.stderr).toBe(0);
    const table = readDeltaTable(delta);
    const allocated = table.bat.filter((entry) => entry !== 0).length;
    expect(statSync(delta).size).toBeLessThanOrEqual(table.dataOffsetSectors * 512 + allocated * MiB);
    expect(execFileSync('qemu-img', ['check', '-f', 'parallels', delta]).toString()).toMatch(/No errors were found/);
    // qemu-io's read -P verifies the pattern: the partition's content survived the moves.
    const read = execFileSync('qemu-io', ['-r', '-f', 'parallels', '-c', 'read -P 0x3c 1M 32M', delta], { encoding: 'utf8' });
    expect(read).not.toMatch(/Pattern verification failed/);
    const exported = join(dir, 'export.raw');
    execFileSync('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', delta, exported]);
    expect(execFileSync('sgdisk', ['-v', exported], { encoding: 'utf8' })).toMatch(/No problems found/);
  });
});
