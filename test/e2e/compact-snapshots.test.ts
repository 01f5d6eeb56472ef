// compact with snapshots. qcow2, an internal snapshot: --info says how much of the free space the snapshot
// holds, compact frees only the rest (the estimate still within 5%), and deleting the snapshot with merge then
// frees about what --info said was held. ploop, a snapshot delta: the top delta is compacted with the files the
// chain shows intact, and free space the base holds is reported, not counted as reclaimable.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildImage, tool, verifyImage } from '../factory/index.js';
import { cli, hostBytes, parseJson, type CompactJson, type InfoJson } from './compact-oracle.js';
import { addPloopSnapshot } from '../helpers/ploop.js';

const dir = mkdtempSync(join(tmpdir(), 'prl-compact-snapshots-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1024 * 1024;
const CLUSTER = 65536;
const DELETED_MIB = 32;

describe('compact with an internal snapshot (qcow2)', () => {
  it('reports what the snapshot holds, frees the rest, and merge then frees the held part', async () => {
    const built = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, sizeMiB: 256, filesMiB: 8, deletedMiB: DELETED_MIB, seed: 12 });
    // The snapshot shares every cluster, the deleted data's included.
    await tool('qemu-img', ['snapshot', '-c', 'before-compact', built.dataFile]);

    const info = parseJson<InfoJson>(await cli(['compact', '--info', '--json', '--hdd', built.hdd]), 'compact --info');
    expect(info.heldByLowerLayersBytes).toBeGreaterThanOrEqual(0.9 * DELETED_MIB * MiB);
    expect(info.reclaimableBytes).toBeLessThan(info.heldByLowerLayersBytes / 4);
    expect(info.warnings.join(' ')).toMatch(/1 internal snapshot\(s\); they hold .* of the free guest space/);

    const before = hostBytes(built.dataFile);
    const result = parseJson<CompactJson>(await cli(['compact', '--json', '--hdd', built.hdd]), 'compact');
    const after = hostBytes(built.dataFile);
    console.log(`snapshot held ${info.heldByLowerLayersBytes}, estimate ${info.reclaimableBytes}, host ${before} -> ${after}, freed ${result.freedBytes}`);
    // Mounting the filesystem writes its metadata, which copy-on-write gives new clusters while the snapshot
    // holds the old ones: the file may grow by a few clusters, and then nothing counts as freed.
    expect(result.hostBytesAfter).toBe(after);
    expect(result.freedBytes).toBe(Math.max(0, before - after));
    expect(after - before).toBeLessThanOrEqual(16 * CLUSTER);
    expect(Math.abs(info.reclaimableBytes - result.freedBytes)).toBeLessThanOrEqual(Math.max(0.05 * result.freedBytes, 2 * CLUSTER));
    const check = await tool('qemu-img', ['check', '-f', 'qcow2', built.dataFile]);
    expect(check.exitCode).toBe(0);
    await verifyImage(built);

    // compact dropped the current state's references; deleting the snapshot drops the last ones, and QEMU
    // punches the clusters out: about what --info said the snapshot held.
    const merged = parseJson<CompactJson>(await cli(['merge', '--json', '--hdd', built.hdd]), 'merge');
    expect(merged.freedBytes).toBeGreaterThanOrEqual(0.9 * info.heldByLowerLayersBytes);
    await verifyImage(built);
  });
});

describe('compact with a snapshot delta (ploop)', () => {
  it('compacts the top delta and leaves the chain showing the same files', async () => {
    const built = await buildImage({ format: 'ploop', table: 'gpt', content: 'ext4', dir, name: 'ploop-top', sizeMiB: 256, filesMiB: 8, deletedMiB: DELETED_MIB, seed: 13 });
    const { top } = addPloopSnapshot(built.hdd, 256, 'top');
    const info = parseJson<InfoJson>(await cli(['compact', '--info', '--json', '--hdd', built.hdd]), 'compact --info');
    // The base is empty: nothing below holds the free space.
    expect(info.heldByLowerLayersBytes).toBe(0);
    const before = hostBytes(top);
    const result = parseJson<CompactJson>(await cli(['compact', '--json', '--hdd', built.hdd]), 'compact');
    const freed = before - hostBytes(top);
    expect(freed).toBeGreaterThanOrEqual(0.9 * DELETED_MIB * MiB);
    expect(Math.abs(info.reclaimableBytes - freed)).toBeLessThanOrEqual(Math.max(0.05 * freed, 2 * MiB));
    expect(result.freedBytes).toBe(freed);
    await verifyImage(built); // through the chain, which is still two deltas
  });

  it('says how much free space the base holds under a fresh snapshot', async () => {
    const built = await buildImage({ format: 'ploop', table: 'gpt', content: 'ext4', dir, name: 'ploop-base', sizeMiB: 256, filesMiB: 8, deletedMiB: DELETED_MIB, seed: 14 });
    addPloopSnapshot(built.hdd, 256, 'base');
    const info = parseJson<InfoJson>(await cli(['compact', '--info', '--json', '--hdd', built.hdd]), 'compact --info');
    expect(info.reclaimableBytes).toBe(0);
    expect(info.heldByLowerLayersBytes).toBeGreaterThanOrEqual(0.9 * DELETED_MIB * MiB);
  });
});
