// resize --resize_partition matrix, GPT on qcow2 and ploop: every filesystem grows, then shrinks to the re-measured
// Minimum (xfs: the shrink is refused). The GPT + NTFS cells are issue 18's: ntfsfix -n finds the backup boot sector.
import { describe } from 'vitest';
import { type Cell, matrix } from './resize-matrix.js';

const cells: Cell[] = (['qcow2', 'ploop'] as const).flatMap((format) =>
  (['ntfs', 'ext4', 'btrfs', 'xfs', 'swap'] as const).map((content) => ({ format, table: 'gpt', content }) as const),
);

describe('resize matrix: gpt', () => matrix('gpt', cells, 1800));
