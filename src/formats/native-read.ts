// Guest bytes read natively from qcow2 files (formats/qcow2/reader.ts) over the chain validated again here. Each
// call opens, reads and closes: a reader never outlives a change to the image it read (no stale L2), and the cost is
// a few header reads. A ploop image is read through the deltas its session holds open (ploop/image.ts guestReaderOf),
// whose BAT follows every write of the engine: it is never opened again by a name.
import { closeSync, realpathSync } from 'node:fs';
import { validateQcow2Chain } from './qcow2/chain.js';
import { qcow2Reader, type ReaderLayer } from './qcow2/reader.js';
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

/** Guest bytes [offset, offset + length) of `path` in `format`, zeros past the disk's end. */
export function readGuestNatively(path: string, format: 'qcow2' | 'parallels' | 'raw', offsetBytes: number, length: number): Buffer {
  if (format === 'qcow2') return readQcow2(path, offsetBytes, length);
  throw new NotReadNatively(`the format ${format} is read through qemu-io`);
}
