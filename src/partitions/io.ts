// Reading and writing a few sectors of a guest disk, with the format always named.
//
// Reads are native (formats/native-read.ts: qcow2 with its backing chain; a ploop image through the deltas its
// session holds open, DiskFile.reader), without an
// appliance (20 s under TCG) and without a QEMU process; where the native reader is not certain (zstd, a table it
// finds odd, another format) the read goes through qemu-io instead, which reads every format as the guest sees
// it. Writes always go through qemu-io (formats/qcow2/qemu-io.ts).
import type { QemuFormat } from '../formats/qcow2/qemu-img.js';
import { readGuestBytes, writeGuestBytes } from '../formats/qcow2/qemu-io.js';
import { readGuestNatively } from '../formats/native-read.js';
import type { GuestReader } from '../formats/guest-reader.js';
import { debug } from '../util/log.js';
import type { SectorWrite } from './gpt.js';

export interface ByteSource {
  /** Bytes [offset, offset + length) of the guest disk; beyond its end reads as zeros. */
  read(offsetBytes: number, length: number): Promise<Buffer>;
  sizeBytes: number;
}

export interface DiskFile {
  path: string;
  format: QemuFormat;
  /** Reads through files the session holds open (a ploop image's deltas), instead of opening `path` again. */
  reader?: GuestReader;
  /** Called right before a tool is given `path` (it cannot take the open files): throws when the name changed. */
  verify?: (tool: string) => void;
}

export function imageSource(disk: DiskFile, sizeBytes: number): ByteSource {
  return {
    sizeBytes,
    async read(offsetBytes, length) {
      const clipped = Math.max(0, Math.min(length, sizeBytes - offsetBytes));
      const out = Buffer.alloc(length);
      if (clipped === 0) return out;
      let bytes: Buffer;
      try {
        bytes = disk.reader !== undefined ? disk.reader.read(offsetBytes, clipped) : readGuestNatively(disk.path, disk.format, offsetBytes, clipped);
      } catch (error) {
        debug(`reading ${clipped} bytes at ${offsetBytes} of "${disk.path}" through qemu-io: the native reader stopped (${(error as Error).message})`);
        disk.verify?.('QEMU');
        bytes = await readGuestBytes(disk.path, disk.format, offsetBytes, clipped);
      }
      bytes.copy(out);
      return out;
    },
  };
}

/** Writes the table's sectors in order, in one qemu-io run (one open, one flush at close). */
export async function writeSectors(disk: DiskFile, writes: readonly SectorWrite[]): Promise<void> {
  disk.verify?.('QEMU');
  await writeGuestBytes(disk.path, disk.format, writes);
}
