// What a native reader of guest bytes offers, and how it says "not here": the caller then reads through qemu-io.

/** Guest bytes of a disk image as the guest sees them (the whole chain), read without a QEMU process. */
export interface GuestReader {
  sizeBytes: number;
  /** Bytes [offset, offset + length); past the disk's end they read as zeros. */
  read(offsetBytes: number, length: number): Buffer;
}

/** The native reader met something it does not read with certainty (zstd, a table past the file's end). */
export class NotReadNatively extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}
