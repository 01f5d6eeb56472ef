// Reading and writing a few sectors of a guest disk, with the format always named.
//
// Through qemu-io (formats/qcow2/qemu-io.ts): it reads qcow2 (and its backing chain) and Parallels deltas as the
// guest sees them, without an appliance (20 s under TCG) and without a temporary copy.
import type { QemuFormat } from '../formats/qcow2/qemu-img.js';
import { readGuestBytes, writeGuestBytes } from '../formats/qcow2/qemu-io.js';
import type { SectorWrite } from './gpt.js';

export interface ByteSource {
  /** Bytes [offset, offset + length) of the guest disk; beyond its end reads as zeros. */
  read(offsetBytes: number, length: number): Promise<Buffer>;
  sizeBytes: number;
}

export interface DiskFile {
  path: string;
  format: QemuFormat;
}

export function imageSource(disk: DiskFile, sizeBytes: number): ByteSource {
  return {
    sizeBytes,
    async read(offsetBytes, length) {
      const clipped = Math.max(0, Math.min(length, sizeBytes - offsetBytes));
      const out = Buffer.alloc(length);
      if (clipped === 0) return out;
      (await readGuestBytes(disk.path, disk.format, offsetBytes, clipped)).copy(out);
      return out;
    },
  };
}

/** Writes the table's sectors in order, in one qemu-io run (one open, one flush at close). */
export async function writeSectors(disk: DiskFile, writes: readonly SectorWrite[]): Promise<void> {
  await writeGuestBytes(disk.path, disk.format, writes);
}
