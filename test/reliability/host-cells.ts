// The operations that need no appliance, as specs shared by the kill, signal and environment tests: how to build
// the image, the command, the completed state, and the state before (what an interrupted run must leave).
import type { BuiltImage, ImageFormat } from '../factory/index.js';
import { chain, completed, info, ploopDeltas, roomAtEnd, standard, withPloopSnapshot, withSnapshots } from './images.js';
import type { CellSpec } from './cells.js';

export interface HostOp extends Omit<CellSpec, 'points'> {
  /** The state before the operation, which an interrupted or refused run must leave; undefined = ok. */
  before: (image: BuiltImage) => string | undefined;
}

const sizeStays = (mib: number) => completed.size(mib);

export function hostOps(format: ImageFormat): HostOp[] {
  // A ploop resize moves the last partition and resizes its content (docs/resize.md, "ploop: the partition follows"):
  // swap is re-made natively, so these cells stay without an appliance (ext4 under kills: appliance-cells.ts).
  const content = format === 'ploop' ? 'swap' : 'ext4';
  const ops: HostOp[] = [
    { format, operation: 'resize grow', build: (dir) => standard(format, dir, { content }), args: (i) => ['resize', '--hdd', i.hdd, '--size', '384M'], after: completed.size(384), before: sizeStays(256) },
    { format, operation: 'resize shrink', build: (dir) => roomAtEnd(format, dir, content), args: (i) => ['resize', '--hdd', i.hdd, '--size', '300M'], after: completed.size(300), before: sizeStays(384) },
    { format, operation: 'convert --plain', build: (dir) => standard(format, dir), args: (i) => ['convert', '--hdd', i.hdd, '--plain'], after: completed.plain, before: completed.expanding },
    { format, operation: 'convert --expanding', build: (dir) => standard(format, dir, { preallocated: true }), args: (i) => ['convert', '--hdd', i.hdd, '--expanding'], after: completed.expanding, before: completed.plain },
  ];
  if (format === 'qcow2') {
    ops.push(
      {
        format, operation: 'merge', build: (dir) => withSnapshots(dir), args: (i) => ['merge', '--hdd', i.hdd], after: completed.noSnapshots,
        before: (i) => (info(i).snapshots === 3 ? undefined : `${info(i).snapshots} snapshots, expected 3`),
      },
      {
        format, operation: 'merge --external', build: (dir) => chain(dir), args: (i) => ['merge', '--external', '--hdd', i.hdd], after: completed.standalone,
        before: (i) => (info(i).backing === 'base.qcow2' ? undefined : `backing file ${info(i).backing}, expected base.qcow2`),
      },
    );
  }
  if (format === 'ploop') {
    ops.push({
      format, operation: 'merge', build: (dir) => withPloopSnapshot(dir), args: (i) => ['merge', '--hdd', i.hdd],
      after: (i) => (ploopDeltas(i) === 1 ? undefined : `${ploopDeltas(i)} deltas left`),
      before: (i) => (ploopDeltas(i) === 2 ? undefined : `${ploopDeltas(i)} deltas, expected 2`),
    });
  }
  return ops;
}
