// resize on ploop images: the engine changes the delta's size, the overlay is committed by the native cluster copy;
// verified by the factory's independent verifier (descriptor vs. delta, qemu-img check, fsck, checksums, tables).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, verifyImage } from '../factory/index.js';
import { MiB, cli, imageSums, info, resize, verifyResized } from './resize-support.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-ploop-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const toArg = (bytes: number): string => `${Math.ceil(bytes / MiB)}M`;

describe('resize on ploop', () => {
  it('gpt ext4: without --resize_partition the partition and its filesystem follow (as ploop resize did), grow and shrink; the dry run says so', async () => {
    const built = await buildImage({ format: 'ploop', table: 'gpt', content: 'ext4', dir, sizeMiB: 512, filesMiB: 16, deletedMiB: 8, seed: 41 });
    // The lock file appears with the first run: the delta and the descriptor are what must not change.
    const data = async (): Promise<string[]> => Object.entries(await imageSums(built)).filter(([file]) => !file.endsWith('.lck')).map(([file, sum]) => `${file} ${sum}`);
    const sums = await data();
    const dry = await cli(['resize', '--hdd', built.hdd, '--size', '640M', '-n']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/As ploop resize does, the last partition and its filesystem follow the disk of a ploop image/);
    expect(dry.stdout).toMatch(/Grow an ext4 filesystem on \/dev\/sda\d to fill/);
    expect(await data()).toEqual(sums);

    const grown = await resize(built.hdd, '640M');
    expect(grown.code, grown.stderr).toBe(0);
    // verifyResized: fsck, file checksums, the fill rule (the filesystem spans the moved partition), real ploop check.
    await verifyResized(built, 640 * MiB);

    const limits = await info(built.hdd);
    expect(limits.size).toBe(640 * MiB);
    expect(limits.minimum).toBeLessThan(512 * MiB);
    const shrunk = await resize(built.hdd, toArg(limits.minimum));
    expect(shrunk.code, shrunk.stderr).toBe(0);
    await verifyResized(built, Math.ceil(limits.minimum / MiB) * MiB);

    const grownAgain = await resize(built.hdd, '1G', '--resize_partition');
    expect(grownAgain.code, grownAgain.stderr).toBe(0);
    await verifyResized(built, 1024 * MiB);
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
    // Without the flag the partition follows on ploop: the same refusal, the same sentence, nothing changed.
    const refusedPlain = await resize(built.hdd, '512M');
    expect(refusedPlain.code).toBe(8);
    expect(refusedPlain.stderr).toBe(refused.stderr);
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
