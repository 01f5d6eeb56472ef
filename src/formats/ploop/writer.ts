// Writing guest bytes into the top delta of a ploop image, natively (QEMU cannot commit into a Parallels image:
// its driver does not support reopening).
//
// Order per new cluster: data written and fsynced, then its BAT entry (ploop1_image.h: a BAT entry never points
// at unwritten data). Clusters already allocated are overwritten in place; the caller re-runs an interrupted
// write whole, so a half-written cluster is rewritten. The top is marked in use while it is written.
//
// Zeros stay sparse: a zero piece never allocates a cluster, and a cluster that the writes left all zeros is
// released afterwards (compaction of the top delta), unless the image is preallocated (plain stays plain).
import { type PloopImage, layoutOf, recoverPloopImage } from './image.js';
import { executeCompact, planCompact } from './compact.js';
import { entryToOffset, offsetToEntry } from './bat.js';
import { readFully } from '../../util/file-io.js';
import { type Delta, clearInUse, clusterHostOffset, markInUse, syncData, usedEndBytes, writeData, writeEntry } from './delta.js';
import { clusterBytes } from './header.js';

/** A writer of virtual bytes into the top delta; allocates clusters at the end of the used area. */
export class VirtualWriter {
  private end: number;
  private readonly cluster: number;
  /** Allocated clusters that received an all-zero piece in place: candidates for release. */
  readonly zeroedInPlace = new Set<number>();

  constructor(private readonly delta: Delta) {
    this.cluster = clusterBytes(delta.header);
    this.end = usedEndBytes(delta);
  }

  write(virtualOffset: number, data: Buffer): void {
    let done = 0;
    while (done < data.length) {
      const at = virtualOffset + done;
      const index = Math.floor(at / this.cluster);
      const within = at % this.cluster;
      const piece = data.subarray(done, done + Math.min(data.length - done, this.cluster - within));
      const host = clusterHostOffset(this.delta, index);
      const zero = piece.every((b) => b === 0);
      if (host !== undefined) {
        writeData(this.delta, piece, host + within);
        if (zero) this.zeroedInPlace.add(index);
      } else if (!zero) {
        // A single-delta image reads unallocated clusters as zeros: the new cluster is zeros plus the piece.
        const whole = Buffer.alloc(this.cluster);
        piece.copy(whole, within);
        const target = this.end;
        writeData(this.delta, whole, target);
        syncData(this.delta, `cluster ${index} written at byte ${target}`);
        writeEntry(this.delta, index, offsetToEntry(this.delta.header, target));
        this.end += this.cluster;
      }
      done += piece.length;
    }
  }

  finish(): void {
    syncData(this.delta, 'data written in place');
  }
}

/** Drops from the top delta the candidate clusters that now hold only zeros (not those a lower delta also holds). */
function releaseZeroClusters(image: PloopImage, candidates: ReadonlySet<number>): void {
  if (candidates.size === 0) return;
  const delta = image.deltas[0]!;
  const cluster = clusterBytes(delta.header);
  const zeros = Buffer.alloc(cluster);
  const zero = [...candidates].filter((index) => delta.bat[index] !== 0 && readFully(delta.fd, cluster, entryToOffset(delta.header, delta.bat[index]!)).equals(zeros));
  if (zero.length === 0) return;
  const lower = image.deltas.slice(1).map((_, i) => layoutOf(image, i + 1));
  executeCompact(image, planCompact(layoutOf(image, 0), lower, zero));
}

/** Writes into the top delta of the session's image (opened for writing), marked in use while it is written. */
export function withPloopWriter(image: PloopImage, notice: (message: string) => void, body: (writer: VirtualWriter) => void): void {
  if (image.pendingRecovery.length > 0) {
    notice(`Completing an interrupted operation on the ploop image first: ${image.pendingRecovery.join('; ')}.`);
    recoverPloopImage(image);
  }
  const delta = image.deltas[0]!;
  markInUse(delta);
  const writer = new VirtualWriter(delta);
  body(writer);
  writer.finish();
  if (!image.descriptor.preallocated) releaseZeroClusters(image, writer.zeroedInPlace);
  clearInUse(delta);
}
