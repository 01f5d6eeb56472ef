// resize --size without --resize_partition (no appliance): grow moves the GPT backup, a plain image gets its new
// space allocated, shrinking into a partition is refused with every byte kept, shrinking free space works.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, tool, verifyImage } from '../factory/index.js';
import { MiB, cli, imageSums, info, resize } from './resize-support.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-plain-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('resize without --resize_partition (qcow2)', () => {
  it('gpt: grows with the backup GPT at the new end, shrinks back, refuses to cut the partition', async () => {
    const built = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, sizeMiB: 256, filesMiB: 4, deletedMiB: 0, seed: 31 });
    const dry = await resize(built.hdd, '384M', '-n');
    expect(dry.code, dry.stderr).toBe(0);
    const sums = await imageSums(built);
    const grown = await resize(built.hdd, '384M');
    expect(grown.code, grown.stderr).toBe(0);
    expect(sums).not.toEqual(await imageSums(built));
    expect((grown.json!.messages as string[]).join(' ')).toMatch(/outside every partition; resize --resize_partition would give them/);
    const report = await verifyImage(built);
    expect(report.image.virtualSizeBytes).toBe(384 * MiB);
    expect(report.table!.lastlba).toBe(384 * 2048 - 34);
    expect(report.partitionSizeBytes).toBe(built.partitions.at(-1)!.sizeSectors * 512);

    const same = await resize(built.hdd, '384M');
    expect(same.code).toBe(0);
    expect(same.json!.unchanged).toBe(true);

    const kept = await imageSums(built);
    const limits = await info(built.hdd);
    expect(limits.size).toBe(384 * MiB);
    expect(limits.minimumKeepLastPartition).toBe(256 * MiB);
    expect(await imageSums(built)).toEqual(kept);
    const refused = await resize(built.hdd, '255M');
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(/never cuts data\. The smallest size it accepts is 256M; .*--resize_partition/);
    expect(await imageSums(built)).toEqual(kept);

    const shrunk = await resize(built.hdd, '256M');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    const back = await verifyImage(built);
    expect(back.image.virtualSizeBytes).toBe(256 * MiB);
    expect(back.table!.lastlba).toBe(256 * 2048 - 34);
  });

  it('a plain (preallocated) image has its new space allocated', async () => {
    const built = await buildImage({ format: 'qcow2', table: 'mbr', content: 'ext2', dir, sizeMiB: 128, filesMiB: 4, deletedMiB: 0, preallocated: true, seed: 32 });
    const grown = await resize(built.hdd, '256M');
    expect(grown.code, grown.stderr).toBe(0);
    const report = await verifyImage(built);
    expect(report.image.virtualSizeBytes).toBe(256 * MiB);
    expect(report.image.allocatedClusters).toBe(report.image.totalClusters);
    expect(report.image.hostBytes).toBeGreaterThanOrEqual(256 * MiB);
  });

  it('a disk without table or filesystem may shrink; one with a filesystem may not be cut', async () => {
    const blank = join(dir, 'blank.qcow2');
    await tool('qemu-img', ['create', '-q', '-f', 'qcow2', blank, '64M']);
    const shrunk = await cli(['resize', '--hdd', blank, '--size', '16M']);
    expect(shrunk.code, shrunk.stderr).toBe(0);
    const limits = await info(blank);
    expect(limits).toMatchObject({ size: 16 * MiB, minimum: MiB, minimumKeepLastPartition: MiB });

    const built = await buildImage({ format: 'qcow2', table: 'none', content: 'xfs', dir, sizeMiB: 320, filesMiB: 4, deletedMiB: 0, seed: 33 });
    const sums = await imageSums(built);
    // xfs cannot shrink: its minimum is its size, read from the superblock without starting the appliance (the
    // verbose log names every tool run and every appliance start; no wall time: the machine is shared).
    const xfsLimits = await info(built.hdd);
    const verbose = await cli(['resize', '--info', '--json', '-v', '--hdd', built.hdd]);
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(verbose.stderr).toMatch(/"message":"\+ qemu-img /);
    expect(verbose.stderr).not.toMatch(/guestfish|appliance started/);
    expect(xfsLimits).toMatchObject({ minimum: 320 * MiB, minimumKeepLastPartition: 320 * MiB });
    const refused = await resize(built.hdd, '300M');
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(/the xfs filesystem spans 320 MiB/);
    expect(await imageSums(built)).toEqual(sums);
  });

  it('an image with internal snapshots is refused, saying to merge first', async () => {
    const built = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext2', dir, sizeMiB: 64, filesMiB: 1, deletedMiB: 0, seed: 34 });
    await tool('qemu-img', ['snapshot', '-c', 'snap1', built.hdd]);
    const refused = await resize(built.hdd, '128M');
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(/internal snapshot.*merge/);
  });
});
