// resize --resize_partition growing qcow2 in place: the dry run's geometry and the host bytes a grow writes. Every
// filesystem x table is grown (and shrunk) by the matrix in resize-matrix-*.test.ts.
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
});
