// resize --resize_partition shrinking qcow2 images in place to resize --info's Minimum (the promise), the refusals
// below it, which leave every byte as it was, and LVM. Every filesystem x table: resize-matrix-*.test.ts.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, type ContentKind, type TableKind } from '../factory/index.js';
import { MiB, imageSums, info, resize, verifyResized } from './resize-support.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prl-resize-shrink-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function build(table: TableKind, content: ContentKind, seed: number, sizeMiB = 512) {
  return buildImage({ format: 'qcow2', table, content, dir, sizeMiB, filesMiB: 16, deletedMiB: 8, seed });
}

const toArg = (bytes: number): string => `${Math.ceil(bytes / MiB)}M`;

describe('resize --resize_partition shrinks qcow2 in place to Minimum', () => {
  it('gpt ext4: below Minimum is refused with nothing changed; at Minimum it succeeds', async () => {
    const built = await build('gpt', 'ext4', 21);
    const limits = await info(built.hdd);
    expect(limits.minimum).toBeLessThan(200 * MiB);
    const sums = await imageSums(built);
    const refused = await resize(built.hdd, toArg(limits.minimum - MiB), '--resize_partition');
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(new RegExp(`the minimum is ${toArg(limits.minimum)} \\(resize --info\\).*Free at least`));
    expect(await imageSums(built)).toEqual(sums);
    // The dry run measures read-only and prints the whole plan, target geometry included; no byte changes.
    const dry = await resize(built.hdd, toArg(limits.minimum), '--resize_partition', '-n');
    expect(dry.code, dry.stderr).toBe(0);
    const plan = (dry.json!.plan as string[]).join('\n');
    expect(plan).toMatch(/Shrink an ext4 filesystem on \/dev\/sda2 to .*\n.*Move the end of partition 2 from sector \d+ to sector \d+.*\n.*Commit the overlay.*\n.*Shrink the image/);
    expect(await imageSums(built)).toEqual(sums);
    const shrunk = await resize(built.hdd, toArg(limits.minimum), '--resize_partition');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    await verifyResized(built, limits.minimum);
  });

  it('gpt lvm: the PV, its last LV and that ext4 shrink to Minimum, then grow again', async () => {
    const built = await build('gpt', 'lvm', 25);
    const limits = await info(built.hdd);
    expect(limits.minimum).toBeLessThan(limits.minimumKeepLastPartition);
    const shrunk = await resize(built.hdd, toArg(limits.minimum), '--resize_partition');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    await verifyResized(built, limits.minimum);
    const grown = await resize(built.hdd, '700M', '--resize_partition');
    expect(grown.code, grown.stderr).toBe(0);
    const report = await verifyResized(built, 700 * MiB);
    expect(report.lvSizeBytes!).toBeGreaterThan(600 * MiB);
  });
});
