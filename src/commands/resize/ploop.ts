// What resize writes into a ploop image: the overlay's clusters (the commit) and the table sectors of a plain
// resize, both through the ploop engine's writer (formats/ploop/writer.ts).
import { closeSync, openSync, readSync } from 'node:fs';
import { map } from '../../formats/qcow2/qemu-img.js';
import { withPloopWriter } from '../../formats/ploop/writer.js';
import { throwIfCancelled } from '../../util/cancel.js';
import { ToolError } from '../../util/errors.js';
import type { Progress } from '../../util/progress.js';
import type { SectorWrite } from '../../partitions/gpt.js';

export function writePloopSectors(folder: string, writes: readonly SectorWrite[], notice: (message: string) => void): void {
  withPloopWriter(folder, notice, (writer) => {
    for (const write of writes) writer.write(write.offsetBytes, write.bytes);
  });
}

/** Copies every cluster the overlay holds (depth 0) into the ploop image. */
export async function commitOverlayIntoPloop(overlayPath: string, folder: string, progress: Progress, notice: (message: string) => void): Promise<void> {
  const extents = (await map(overlayPath, 'qcow2', true)).filter((extent) => extent.depth === 0 && (extent.data || extent.zero));
  const total = extents.reduce((sum, extent) => sum + extent.length, 0);
  const chunk = 4 * 1024 * 1024;
  const fd = openSync(overlayPath, 'r');
  try {
    withPloopWriter(folder, notice, (writer) => {
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
