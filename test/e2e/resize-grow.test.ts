// resize --resize_partition growing qcow2 images in place: each filesystem once, each table once; every image is
// verified by independent tools (files identical, fsck, sgdisk/sfdisk, attributes kept, content fills the partition).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, type ContentKind, type TableKind } from '../factory/index.js';
import { MiB, imageSums, info, resize, verifyResized } from './resize-support.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-grow-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function build(table: TableKind, content: ContentKind, seed: number, sizeMiB = 512) {
  return buildImage({ format: 'qcow2', table, content, dir, sizeMiB, filesMiB: 16, deletedMiB: 8, seed });
}

describe('resize --resize_partition grows qcow2 in place', () => {
  it('gpt ext4: --info is consistent, the grow keeps every file, the attributes, and writes little', async () => {
    const built = await build('gpt', 'ext4', 11);
    const before = await info(built.hdd);
    expect(before.size).toBe(512 * MiB);
    expect(before.minimum).toBeLessThan(before.minimumKeepLastPartition);
    const dry = await resize(built.hdd, '1G', '--resize_partition', '-n');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.json!.dryRun).toBe(true);
    expect((dry.json!.plan as string[]).join('\n')).toMatch(/Move the end of partition 2 .* to sector 2097118/);
    const grown = await resize(built.hdd, '1G', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 1024 * MiB);
    // No copy: the host file grows by metadata only, far below the 16 MiB of data the image holds.
    const written = (grown.json!.hostBytesAfter as number) - (grown.json!.hostBytesBefore as number);
    console.log(`gpt ext4 grow 512M -> 1G: host bytes +${written}`);
    expect(written).toBeLessThan(8 * MiB);
    await imageSums(built);
  });

  it('mbr ntfs: grows, bootable flag kept', async () => {
    const built = await build('mbr', 'ntfs', 12);
    const grown = await resize(built.hdd, '700M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 700 * MiB);
  });

  it('logical ext3: the logical partition and its extended container grow', async () => {
    const built = await build('logical', 'ext3', 13);
    const grown = await resize(built.hdd, '900M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 900 * MiB);
  });

  it('no table, btrfs: the filesystem grows to the whole disk', async () => {
    const built = await build('none', 'btrfs', 14);
    const grown = await resize(built.hdd, '800M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 800 * MiB);
  });

  it('gpt xfs: grows; a shrink is refused while planning and changes nothing', async () => {
    const built = await build('gpt', 'xfs', 15);
    const grown = await resize(built.hdd, '700M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 700 * MiB);
    const sums = await imageSums(built);
    const refused = await resize(built.hdd, '600M', '--resize_partition');
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(/xfs filesystem, which cannot shrink .*grow the disk instead/);
    expect(await imageSums(built)).toEqual(sums);
  });

  it('logical swap: grows and shrinks natively, UUID and label kept', async () => {
    const built = await build('logical', 'swap', 16, 256);
    const grown = await resize(built.hdd, '400M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    await verifyResized(built, 400 * MiB);
    const shrunk = await resize(built.hdd, '200M', '--resize_partition');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    await verifyResized(built, 200 * MiB);
  });
});
