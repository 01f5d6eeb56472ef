// The image model every command starts from: format, sizes, host allocation, chain, snapshots.
import { hostAllocatedBytes } from '../util/space.js';
import type { ImageRef } from './resolve.js';
import { infoChain, type ImageInfo, type Snapshot } from './qcow2/qemu-img.js';
import type { PloopDescriptor } from './ploop/descriptor.js';
import { closePloopImage, openPloopImage } from './ploop/image.js';
import type { Drive } from '../guest/session.js';

interface Common {
  virtualSizeBytes: number;
  /** Host bytes allocated by every file of the image (top and lower layers). */
  hostBytes: number;
}

export interface Qcow2Image extends Common {
  format: 'qcow2';
  path: string;
  /** The image and its backing files, top first. */
  chain: ImageInfo[];
  snapshots: Snapshot[];
}

export interface PloopImage extends Common {
  format: 'ploop';
  folder: string;
  descriptor: PloopDescriptor;
  /** Delta files, top first. */
  deltas: string[];
  /** What an interrupted operation left that a change completes first, one sentence each (ploop/image.ts). */
  pendingRecovery: string[];
}

export type Image = Qcow2Image | PloopImage;

export async function loadImage(ref: ImageRef): Promise<Image> {
  if (ref.format === 'qcow2') {
    const chain = await infoChain(ref.path, 'qcow2', true);
    const top = chain[0]!;
    return {
      format: 'qcow2',
      path: ref.path,
      chain,
      snapshots: top.snapshots,
      virtualSizeBytes: top.virtualSize,
      hostBytes: chain.reduce((sum, info) => sum + hostAllocatedBytes(info.filename), 0),
    };
  }
  // One read of the descriptor and the deltas' headers. The top delta holds the data, and every operation of ours
  // changes it before the descriptor: where the two disagree, the delta's size is the one the recovery completes
  // to, so it is the size every plan starts from.
  const ploop = openPloopImage(ref.folder);
  try {
    const deltas = ploop.descriptor.chain.map((link) => link.file);
    return {
      format: 'ploop',
      folder: ref.folder,
      descriptor: ploop.descriptor,
      deltas,
      virtualSizeBytes: ploop.sizeBytes,
      hostBytes: deltas.reduce((sum, file) => sum + hostAllocatedBytes(file), 0),
      pendingRecovery: ploop.pendingRecovery,
    };
  } finally {
    closePloopImage(ploop);
  }
}

/** The drive the appliance sees for this image: always with its format named. */
export function guestDrive(image: Image, readonly: boolean): Drive {
  if (image.format === 'qcow2') return { path: image.path, format: 'qcow2', readonly };
  return { path: image.deltas[0]!, format: 'parallels', readonly };
}
