// Guest bytes read natively from the image files: qcow2 (formats/qcow2/reader.ts) over the chain validated again
// here, ploop through the engine's BAT (formats/ploop/image.ts). Each call opens, reads and closes: a reader never
// outlives a change to the image it read (no stale L2 or BAT), and the cost is a few header reads.
import { closeSync, realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { validateQcow2Chain } from './qcow2/chain.js';
import { qcow2Reader, type ReaderLayer } from './qcow2/reader.js';
import { closePloopImage, openPloopImage, readVirtual } from './ploop/image.js';
import { NotReadNatively } from './guest-reader.js';
import { openRegularFile } from '../util/safe-file.js';

function readQcow2(path: string, offsetBytes: number, length: number): Buffer {
  const chain = validateQcow2Chain(realpathSync(path));
  const layers: ReaderLayer[] = [];
  try {
    for (const link of chain) {
      const { fd, stats } = openRegularFile(link.path);
      layers.push({ fd, fileBytes: stats.size, ...(link.header ? { header: link.header } : {}) });
    }
    return qcow2Reader(layers).read(offsetBytes, length);
  } finally {
    for (const layer of layers) closeSync(layer.fd);
  }
}

function readPloopTop(deltaPath: string, offsetBytes: number, length: number): Buffer {
  const image = openPloopImage(dirname(deltaPath));
  try {
    if (realpathSync(image.deltas[0]!.path) !== realpathSync(deltaPath)) throw new NotReadNatively(`"${deltaPath}" is not the top delta of its folder's ploop image`);
    return readVirtual(image, offsetBytes, length);
  } finally {
    closePloopImage(image);
  }
}

/** Guest bytes [offset, offset + length) of `path` in `format`, zeros past the disk's end. */
export function readGuestNatively(path: string, format: 'qcow2' | 'parallels' | 'raw', offsetBytes: number, length: number): Buffer {
  if (format === 'qcow2') return readQcow2(path, offsetBytes, length);
  if (format === 'parallels') return readPloopTop(path, offsetBytes, length);
  throw new NotReadNatively(`the format ${format} is read through qemu-io`);
}
