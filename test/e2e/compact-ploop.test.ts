// compact on ploop, every filesystem once: the estimate matches what compact frees, the delta ends within 2%
// of the best allocation, the content is intact; a compact image frees nothing; kill -9 mid-way, then a rerun.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildImage, type ContentKind, type TableKind, verifyImage } from '../factory/index.js';
import { bestAllocationBytes, cli, hostBytes, parseJson, type CompactJson, type InfoJson } from './compact-oracle.js';

const dir = mkdtempSync(join(tmpdir(), 'prl-compact-ploop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CLUSTER = 1024 * 1024;
/** The header and BAT of a 512 MiB delta: the data area starts at the first cluster. */
const METADATA_BYTES = CLUSTER;
const MiB = 1024 * 1024;

const cases: [TableKind, ContentKind][] = [
  ['logical', 'ext2'],
  ['mbr', 'ext3'],
  ['gpt', 'ntfs'],
  ['none', 'btrfs'],
  ['mbr', 'xfs'],
  ['gpt', 'swap'],
  ['logical', 'lvm'],
];

describe('compact ploop', () => {
  it.each(cases)('%s %s: estimate, compact, verify', async (table, content) => {
    const built = await buildImage({ format: 'ploop', table, content, dir, sizeMiB: 512, filesMiB: 16, deletedMiB: 48, seed: 21 });
    const best = await bestAllocationBytes(built, CLUSTER);
    const info = parseJson<InfoJson>(await cli(['compact', '--info', '--json', '--hdd', built.hdd]), 'compact --info');
    expect(info.blockSize).toBe(CLUSTER);
    expect(info.totalBlocks).toBe(512);

    const before = hostBytes(built.dataFile);
    const result = parseJson<CompactJson>(await cli(['compact', '--json', '--hdd', built.hdd]), 'compact');
    const after = hostBytes(built.dataFile);
    console.log(`ploop ${table} ${content}: best ${best}, estimate ${info.reclaimableBytes}, freed ${result.freedBytes}, after ${after}`);
    expect(result.freedBytes).toBe(before - after);
    expect(Math.abs(info.reclaimableBytes - result.freedBytes)).toBeLessThanOrEqual(Math.max(0.05 * result.freedBytes, CLUSTER));
    expect(after).toBeLessThanOrEqual(best * 1.02 + METADATA_BYTES);
    if (content !== 'swap') expect(result.freedBytes).toBeGreaterThan(30 * MiB);
    await verifyImage(built);
  });

  it('ext4: kill -9 during the compaction, a rerun completes it; then a compact image frees nothing', async () => {
    const built = await buildImage({ format: 'ploop', table: 'gpt', content: 'ext4', dir, sizeMiB: 512, filesMiB: 16, deletedMiB: 48, seed: 22 });
    const before = hostBytes(built.dataFile);
    let killedAt = '';
    const killed = await cli(['compact', '-v', '--json', '--hdd', built.hdd], (line, kill) => {
      // The first durable BAT change: the engine is past its in-use mark and mid-way through the release.
      if (killedAt === '' && /ploop: .*(BAT|released|moved|in-use flag set)/.test(line)) {
        killedAt = line;
        kill();
      }
    });
    console.log(`killed at: ${killedAt}`);
    expect(killed.code).toBe(137);
    expect(killedAt).not.toBe('');

    const rerun = parseJson<CompactJson>(await cli(['compact', '--json', '--hdd', built.hdd]), 'compact after kill -9');
    expect(rerun.messages.join(' ')).toMatch(/interrupted/);
    const after = hostBytes(built.dataFile);
    expect(before - after).toBeGreaterThan(30 * MiB);
    await verifyImage(built);

    const again = parseJson<CompactJson>(await cli(['compact', '--json', '--hdd', built.hdd]), 'compact again');
    expect(again.freedBytes).toBe(0);
    expect(again.unchanged).toBe(true);
    expect(hostBytes(built.dataFile)).toBe(after);
    await verifyImage(built);
  });
});
