// Whole reads and writes at an offset: readSync/writeSync may move fewer bytes than asked.
import { readSync, writeSync } from 'node:fs';

export function readFully(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break; // past the end: the rest reads as zeros, like a hole
    done += n;
  }
  return buf;
}

export function writeFully(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}
