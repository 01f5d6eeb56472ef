// The resize --resize_partition matrix shared by test/e2e/resize-matrix-*.test.ts: one image per cell, grown, then
// measured again with resize --info (a grown filesystem carries more metadata) and shrunk to that Minimum; xfs
// grows and its shrink is refused with no byte changed. Every step is checked by the factory's verifier: each
// filesystem's own checker (NTFS: ntfsfix -n's alternate boot sector read from its output) and the fill rule.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildImage, type ContentKind, type ImageFormat, type TableKind } from '../factory/index.js';
import { MiB, imageSums, info, resize, verifyResized } from './resize-support.js';

export interface Cell {
  format: ImageFormat;
  table: TableKind;
  content: ContentKind;
}

const toArg = (bytes: number): string => `${Math.ceil(bytes / MiB)}M`;

/** Sizes that keep each cell cheap: xfs needs a 300 MiB partition to be made; the grow adds 200 MiB. */
const START_MIB = 512;
const GROWN_MIB = 712;

/** Registers one test per cell, each on its own image in a folder removed afterwards. */
export function matrix(name: string, cells: readonly Cell[], seed: number): void {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), `prl-resize-matrix-${name}-`));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  cells.forEach((cell, index) => {
    it(`${cell.format} ${cell.table} ${cell.content}: grows, then shrinks to the re-measured Minimum`, async () => {
      const built = await buildImage({ ...cell, dir, sizeMiB: START_MIB, filesMiB: 16, deletedMiB: 0, seed: seed + index });
      const grown = await resize(built.hdd, `${GROWN_MIB}M`, '--resize_partition');
      expect(grown.code, grown.stderr).toBe(0);
      await verifyResized(built, GROWN_MIB * MiB);

      const limits = await info(built.hdd);
      expect(limits.size).toBe(GROWN_MIB * MiB);
      if (cell.content === 'xfs') {
        const sums = await imageSums(built);
        const refused = await resize(built.hdd, `${START_MIB}M`, '--resize_partition');
        expect(refused.code).toBe(8);
        expect(refused.stderr).toMatch(/xfs filesystem, which cannot shrink/);
        expect(await imageSums(built)).toEqual(sums);
        return;
      }
      expect(limits.minimum).toBeLessThan(START_MIB * MiB);
      const shrunk = await resize(built.hdd, toArg(limits.minimum), '--resize_partition');
      expect(shrunk.code, shrunk.stderr).toBe(0);
      const report = await verifyResized(built, Math.ceil(limits.minimum / MiB) * MiB);
      if (cell.content === 'ntfs') {
        console.log(`${cell.format} ${cell.table} ntfs at Minimum, ntfsfix -n:\n${report.fsckOutput ?? ''}`);
        expect(report.fsckOutput).toMatch(/^Checking the alternate boot sector\.\.\. OK$/m);
      }
      await imageSums(built);
    });
  });
}
