// What resize writes into a ploop image: the overlay's clusters (the commit) and the table sectors of a plain
// resize, both through the ploop engine's writer (formats/ploop/writer.ts).
import { closeSync, openSync, readSync } from 'node:fs';
import { map } from '../../formats/qcow2/qemu-img.js';
import { withPloopWriter } from '../../formats/ploop/writer.js';
import { layoutOf, type PloopImage } from '../../formats/ploop/image.js';
import { describeResizeStep, planResize as planPloopResize } from '../../formats/ploop/resize.js';
import { throwIfCancelled } from '../../util/cancel.js';
import { ToolError } from '../../util/errors.js';
import type { Progress } from '../../util/progress.js';
import type { SectorWrite } from '../../partitions/gpt.js';

export function writePloopSectors(image: PloopImage, writes: readonly SectorWrite[], notice: (message: string) => void): void {
  withPloopWriter(image, notice, (writer) => {
    for (const write of writes) {
      if (write.barrier) writer.finish();
      writer.write(write.offsetBytes, write.bytes);
    }
  });
}

/** Copies every cluster the overlay holds (depth 0) into the ploop image. */
export async function commitOverlayIntoPloop(overlayPath: string, image: PloopImage, progress: Progress, notice: (message: string) => void): Promise<void> {
  const extents = (await map(overlayPath, 'qcow2', true)).filter((extent) => extent.depth === 0 && (extent.data || extent.zero));
  const total = extents.reduce((sum, extent) => sum + extent.length, 0);
  const chunk = 4 * 1024 * 1024;
  const fd = openSync(overlayPath, 'r');
  try {
    withPloopWriter(image, notice, (writer) => {
      let done = 0;
      for (const extent of extents) {
        for (let at = 0; at < extent.length; at += chunk) {
          throwIfCancelled();
          const length = Math.min(chunk, extent.length - at);
          const buffer = Buffer.alloc(length);
          if (extent.data) {
            if (extent.offset === undefined) throw new ToolError('tool-failed', `The overlay "${overlayPath}" holds data qemu-img cannot place (compressed?); nothing was committed past byte ${extent.start}.`);
            readSync(fd, buffer, 0, length, extent.offset + at);
          }
          writer.write(extent.start + at, buffer);
          done += length;
          progress.update(total > 0 ? done / total : 1);
        }
      }
    });
  } finally {
    closeSync(fd);
  }
}

/**
 * The ploop engine's own steps for a size change, planned on the image as it is now, for the dry run (a shrink
 * after an overlay commit is planned again then: the commit may add clusters, which the same rules move). Moves
 * are summed up in one line: a grow past a BAT cluster may move thousands.
 */
export function describePloopEngine(image: PloopImage, toBytes: number, preallocate: boolean): string[] {
  const lower = image.deltas.slice(1).map((_, index) => layoutOf(image, index + 1));
  const top = layoutOf(image, 0);
  const lines: string[] = [];
  if (toBytes < image.sizeBytes) {
    const kept = Math.ceil(toBytes / image.clusterBytes);
    const beyond = [...top.bat.slice(kept, top.header.batEntries)].filter((entry) => entry !== 0).length;
    if (beyond > 0) lines.push(`Release the ${beyond} cluster(s) past the new end, moving tail clusters into the holes they leave (the compact engine).`);
  }
  const steps = planPloopResize(top, lower, toBytes, { preallocated: preallocate }).steps;
  const moves = steps.filter((step) => step.kind === 'move-cluster').length;
  let movesSaid = false;
  for (const step of steps) {
    if (step.kind !== 'move-cluster') lines.push(describeResizeStep(step));
    else if (!movesSaid) {
      lines.push(`Move ${moves} cluster(s) out of the way of the longer BAT to the end of the file, each copied and fsynced before its BAT entry changes.`);
      movesSaid = true;
    }
  }
  return lines;
}
