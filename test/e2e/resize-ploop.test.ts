// resize on ploop images: the engine changes the delta's size, the overlay is committed by the native cluster copy;
// verified by the factory's independent verifier (descriptor vs. delta, qemu-img check, fsck, checksums, tables).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, verifyImage } from '../factory/index.js';
import { MiB, imageSums, info, resize, verifyResized } from './resize-support.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-ploop-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const toArg = (bytes: number): string => `${Math.ceil(bytes / MiB)}M`;

describe('resize on ploop', () => {
  it('gpt ext4: plain grow, then --info, shrink to Minimum, grow back with --resize_partition', async () => {
    const built = await buildImage({ format: 'ploop', table: 'gpt', content: 'ext4', dir, sizeMiB: 512, filesMiB: 16, deletedMiB: 8, seed: 41 });
    const plain = await resize(built.hdd, '640M');
    expect(plain.code, plain.stderr).toBe(0);
    const report = await verifyImage(built);
    expect(report.ploop!.diskSizeSectors).toBe(640 * 2048);
    expect(report.table!.lastlba).toBe(640 * 2048 - 34);

    const limits = await info(built.hdd);
    expect(limits.size).toBe(640 * MiB);
    const shrunk = await resize(built.hdd, toArg(limits.minimum), '--resize_partition');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    await verifyResized(built, limits.minimum);

    const grown = await resize(built.hdd, '1G', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 1024 * MiB);
    await imageSums(built);
  });

  it('logical xfs: grows with the extended container; shrinking is refused with nothing changed', async () => {
    const built = await buildImage({ format: 'ploop', table: 'logical', content: 'xfs', dir, sizeMiB: 512, filesMiB: 8, deletedMiB: 0, seed: 42 });
    const grown = await resize(built.hdd, '700M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 700 * MiB);
    const sums = await imageSums(built);
    const refused = await resize(built.hdd, '512M', '--resize_partition');
    expect(refused.code).toBe(8);
    expect(await imageSums(built)).toEqual(sums);
  });

  it('a preallocated ploop image gets its new space allocated', async () => {
    const built = await buildImage({ format: 'ploop', table: 'mbr', content: 'ext2', dir, sizeMiB: 128, filesMiB: 4, deletedMiB: 0, preallocated: true, seed: 43 });
    const grown = await resize(built.hdd, '256M');
    expect(grown.code, grown.stderr).toBe(0);
    const report = await verifyImage(built);
    expect(report.image.virtualSizeBytes).toBe(256 * MiB);
    expect(report.image.allocatedClusters).toBe(report.image.totalClusters);
  });
});
