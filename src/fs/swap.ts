// Linux swap (v1, "SWAPSPACE2"; include/linux/swap.h union swap_header): re-made natively by rewriting the
// header page with the new last page, so UUID and label are kept by construction. No appliance needed.
import { Refused } from '../util/errors.js';
import { MiB } from '../util/units.js';
import { type Filesystem, type FsProbe, wholeBlocks } from './types.js';

/** x86-64 page size; the magic sits in the last 10 bytes of the first page. */
export const SWAP_PAGE_BYTES = 4096;
const MAGIC_AT = SWAP_PAGE_BYTES - 10;
const VERSION_AT = 1024;
const LAST_PAGE_AT = 1028;
const HIBERNATION = ['S1SUSPEND', 'S2SUSPEND', 'ULSUSPEND', 'LINHIB0001'];

export function probeSwap(head: Buffer): FsProbe | undefined {
  if (head.length < SWAP_PAGE_BYTES) return undefined;
  const magic = head.toString('latin1', MAGIC_AT, SWAP_PAGE_BYTES);
  if (HIBERNATION.some((signature) => magic.endsWith(signature) || head.toString('latin1', MAGIC_AT).startsWith(signature))) {
    return { type: 'swap', sizeBytes: 0, damaged: 'the swap area holds a hibernation image; resume the guest once and shut it down cleanly first' };
  }
  if (magic !== 'SWAPSPACE2') return undefined;
  const probe: FsProbe = { type: 'swap', sizeBytes: (head.readUInt32LE(LAST_PAGE_AT) + 1) * SWAP_PAGE_BYTES, blockBytes: SWAP_PAGE_BYTES };
  if (head.readUInt32LE(VERSION_AT) !== 1) probe.damaged = `the swap area has header version ${head.readUInt32LE(VERSION_AT)}, which is not supported`;
  return probe;
}

/** The header page for a swap area of `sizeBytes` (whole pages), everything else as it was. */
export function swapHeader(head: Buffer, sizeBytes: number): Buffer {
  const pages = Math.floor(sizeBytes / SWAP_PAGE_BYTES);
  if (pages < 10) throw new Refused('A swap area needs at least 10 pages (40 KiB).');
  const page = Buffer.from(head.subarray(0, SWAP_PAGE_BYTES));
  page.writeUInt32LE(pages - 1, LAST_PAGE_AT);
  return page;
}

export const swap: Filesystem = {
  type: 'swap',
  noun: 'a swap area',
  canGrow: true,
  measuresInGuest: false,
  probe: probeSwap,
  async measure() {
    // Swap holds no data worth keeping while the guest is off; it is re-made at any size of 10 pages or more.
    return { minimumBytes: MiB, warnings: [] };
  },
  resizeNative: (head, sizeBytes) => [{ offsetBytes: 0, bytes: swapHeader(head, sizeBytes) }],
  async grow() {
    throw new Error('swap is resized natively');
  },
  async shrink() {
    throw new Error('swap is resized natively');
  },
  fitBytes: wholeBlocks,
};
