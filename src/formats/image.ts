// The image model every command starts from: format, sizes, host allocation, chain, snapshots.
import { hostAllocatedBytes } from '../util/space.js';
import type { ImageRef } from './resolve.js';
import { infoChain, type ImageInfo, type Snapshot } from './qcow2/qemu-img.js';
import type { PloopDescriptor } from './ploop/descriptor.js';
import { requireChainStillNamed, type PloopImage as PloopHandle } from './ploop/image.js';
import { hostBytesOf } from './ploop/delta.js';
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
  /** The deltas as the session opened them (once, identity recorded): every read and write goes through it. */
  handle: PloopHandle;
  /** What an interrupted operation left that a change completes first, one sentence each (ploop/image.ts). */
  pendingRecovery: string[];
}

export type Image = Qcow2Image | PloopImage;

export async function loadImage(ref: ImageRef, handle?: PloopHandle): Promise<Image> {
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
  if (handle === undefined) throw new Error('internal: a ploop image is loaded from the deltas the session opened');
  return {
    format: 'ploop',
    folder: ref.folder,
    descriptor: handle.descriptor,
    deltas: handle.deltas.map((delta) => delta.path),
    handle,
    virtualSizeBytes: handle.sizeBytes,
    hostBytes: handle.deltas.reduce((sum, delta) => sum + hostBytesOf(delta), 0),
    pendingRecovery: handle.pendingRecovery,
  };
}

/** The drive the appliance sees for this image: always with its format named. */
export function guestDrive(image: Image, readonly: boolean): Drive {
  if (image.format === 'qcow2') return { path: image.path, format: 'qcow2', readonly };
  requireChainStillNamed(image.handle, 'the appliance');
  return { path: image.deltas[0]!, format: 'parallels', readonly };
}
