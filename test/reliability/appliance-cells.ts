// The fault cells of the operations that run the appliance (resize --resize_partition, compact): few kill points by
// default, because every point costs a partial run plus a full rerun of 30-60 s; the full matrix has 20.
import type { ImageFormat } from '../factory/index.js';
import { FULL, spread } from './harness.js';
import { completed, standard } from './images.js';
import type { CellSpec } from './cells.js';

/** Default: one point in the middle of the guest work and one in the final commit (the last tenth of a run). */
export function appliancePoints(defaults: number[]): number[] {
  return FULL ? spread(20) : defaults;
}

export function applianceCells(format: ImageFormat): CellSpec[] {
  return [
    {
      format,
      operation: 'resize --resize_partition grow',
      points: appliancePoints([0.5, 0.93]),
      build: (dir) => standard(format, dir),
      args: (i) => ['resize', '--hdd', i.hdd, '--size', '384M', '--resize_partition'],
      after: completed.near(384),
    },
    {
      format,
      operation: 'resize --resize_partition shrink',
      points: appliancePoints([0.6]),
      build: (dir) => standard(format, dir),
      args: (i) => ['resize', '--hdd', i.hdd, '--size', '160M', '--resize_partition'],
      after: completed.near(160),
    },
    {
      format,
      operation: 'compact',
      points: appliancePoints([0.8]),
      build: (dir) => standard(format, dir),
      args: (i) => ['compact', '--hdd', i.hdd],
      after: completed.any,
    },
  ];
}
