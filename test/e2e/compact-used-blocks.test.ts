// compact --info's usedBlocks against an independent count (issue 17 item 3): the image's allocated clusters
// (qemu-img map) minus those that lie wholly in the filesystem's free blocks as ext4 itself records them
// (dumpe2fs on a raw export; no table, so the filesystem starts at byte 0). One appliance start per format.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildImage, type ImageFormat } from '../factory/index.js';
import { cli, parseJson, type InfoJson } from './compact-oracle.js';

const dir = mkdtempSync(join(tmpdir(), 'prl-compact-used-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Range {
  start: number;
  end: number; // exclusive
}

/** Clusters holding host data at the top layer: every qemu-img map extent with a host offset. */
function allocatedClusters(file: string, format: 'qcow2' | 'parallels', clusterBytes: number): Set<number> {
  const extents = JSON.parse(execFileSync('qemu-img', ['map', '-U', '--output=json', '-f', format, file], { encoding: 'utf8', maxBuffer: 64 << 20 })) as {
    start: number;
    length: number;
    depth: number;
    offset?: number;
  }[];
  const clusters = new Set<number>();
  for (const e of extents.filter((x) => x.depth === 0 && x.offset !== undefined)) {
    for (let c = Math.floor(e.start / clusterBytes); c * clusterBytes < e.start + e.length; c++) clusters.add(c);
  }
  return clusters;
}

/**
 * ext4's free blocks, in bytes, from dumpe2fs's per-group "Free blocks:" lists (inclusive block ranges). Each range is
 * kept as listed, even where it touches the next group's first range: FITRIM discards each group's free ranges on
 * their own, so a cluster that straddles a group boundary is never discarded whole (measured below).
 */
function ext4FreeRanges(raw: string): Range[] {
  const text = execFileSync('dumpe2fs', [raw], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  const blockBytes = Number(/^Block size:\s+(\d+)$/m.exec(text)![1]);
  const ranges: Range[] = [];
  for (const [, list] of text.matchAll(/^\s+Free blocks: (.+)$/gm)) {
    for (const item of list!.split(', ')) {
      const [first, last = first] = item.split('-').map(Number);
      ranges.push({ start: first! * blockBytes, end: (last! + 1) * blockBytes });
    }
  }
  return ranges;
}

/** Clusters lying wholly inside one of the free ranges. */
function wholeFreeClusters(free: Range[], clusterBytes: number): Set<number> {
  const clusters = new Set<number>();
  for (const r of free) for (let c = Math.ceil(r.start / clusterBytes); (c + 1) * clusterBytes <= r.end; c++) clusters.add(c);
  return clusters;
}

describe('compact --info usedBlocks', () => {
  it.each<[ImageFormat, number]>([
    ['qcow2', 65536],
    ['ploop', 1 << 20],
  ])('%s ext4: allocated clusters minus the wholly free ones, as dumpe2fs counts them', async (format, clusterBytes) => {
    const built = await buildImage({ format, table: 'none', content: 'ext4', dir, sizeMiB: 256, filesMiB: 16, deletedMiB: 48, seed: 23 });
    const qemuFormat = format === 'qcow2' ? 'qcow2' : 'parallels';
    const info = parseJson<InfoJson>(await cli(['compact', '--info', '--json', '--hdd', built.hdd]), 'compact --info');

    const raw = join(dir, `${format}.raw`);
    execFileSync('qemu-img', ['convert', '-U', '-f', qemuFormat, '-O', 'raw', built.dataFile, raw]);
    const allocated = allocatedClusters(built.dataFile, qemuFormat, clusterBytes);
    const free = wholeFreeClusters(ext4FreeRanges(raw), clusterBytes);
    const used = [...allocated].filter((c) => !free.has(c)).length;
    rmSync(raw);

    expect(info.blockSize).toBe(clusterBytes);
    expect(info.allocatedBlocks).toBe(allocated.size);
    // The deleted 48 MiB must show: the count is not just "allocated".
    expect(allocated.size - used).toBeGreaterThanOrEqual((40 << 20) / clusterBytes);
    // The tool finds free space through the guest (FITRIM in an overlay), not dumpe2fs. Session 4 saw it count 4
    // clusters more as used than dumpe2fs's free lists joined across groups, with 64 KiB and 1 MiB clusters alike:
    // this 1 KiB-block ext4 starts its groups at block 8192n+1, and the 4 clusters over the boundaries of groups
    // 1|2, 3|4, 5|6 and 17|18 are free but each group's discard covers only part of them, so compact cannot free
    // them either. Counted per group, the two agree exactly.
    const detail = `usedBlocks ${info.usedBlocks}, independent count ${used} of ${allocated.size} allocated`;
    expect(info.usedBlocks, detail).toBe(used);
  });
});
