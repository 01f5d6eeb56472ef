// Guest bytes of a qcow2 chain read natively, without qemu-io: L1/L2 (standard and extended L2), zero and
// unallocated clusters falling through to the backing layer, compressed clusters (raw deflate). Offsets and bit
// layouts: QEMU docs/interop/qcow2.txt ("Cluster mapping", "Extended L2 Entries", "Compressed Clusters").
// Read-only and uncached beyond one call's lifetime; anything unusual throws NotReadNatively and the caller reads
// through qemu-io instead, so a hostile table costs at most the bytes one read asks for.
import { inflateRawSync } from 'node:zlib';
import { readFully } from '../../util/file-io.js';
import { NotReadNatively, type GuestReader } from '../guest-reader.js';
import { INCOMPAT_EXTENDED_L2, type Qcow2Header } from './header.js';

/** One layer of the chain, top first, on an fd its owner opened (and closes). */
export interface ReaderLayer {
  fd: number;
  fileBytes: number;
  /** Undefined for a raw layer (the chain's last layer may be raw). */
  header?: Qcow2Header;
}

const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;
const ZERO_FLAG = 1n;
/** L1 entries read per table read: 4 KiB. */
const L1_PAGE_ENTRIES = 512;
const L2_CACHE_TABLES = 64;

class LayerReader {
  readonly clusterBytes: number;
  readonly sizeBytes: number;
  private readonly extendedL2: boolean;
  private readonly entriesPerL2: number;
  private readonly l1Pages = new Map<number, Buffer>();
  private readonly l2Tables = new Map<bigint, Buffer>();
  private lastCompressed?: { entry: bigint; data: Buffer };

  constructor(
    private readonly layer: ReaderLayer & { header: Qcow2Header },
    private readonly below: (offset: number, length: number) => Buffer,
  ) {
    const header = layer.header;
    this.clusterBytes = 2 ** header.clusterBits;
    this.sizeBytes = Number(header.sizeBytes);
    this.extendedL2 = (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
    this.entriesPerL2 = this.clusterBytes / (this.extendedL2 ? 16 : 8);
  }

  private hostRead(offset: bigint, length: number, what: string): Buffer {
    if (offset + BigInt(length) > BigInt(this.layer.fileBytes)) throw new NotReadNatively(`a ${what} lies past the end of the file`);
    return readFully(this.layer.fd, length, Number(offset));
  }

  private l1Entry(index: number): bigint {
    const header = this.layer.header;
    if (index >= header.l1Entries) return 0n;
    const page = Math.floor(index / L1_PAGE_ENTRIES);
    let bytes = this.l1Pages.get(page);
    if (!bytes) {
      const entries = Math.min(L1_PAGE_ENTRIES, header.l1Entries - page * L1_PAGE_ENTRIES);
      bytes = this.hostRead(header.l1TableOffset + BigInt(page * L1_PAGE_ENTRIES * 8), entries * 8, 'L1 table');
      this.l1Pages.set(page, bytes);
    }
    return bytes.readBigUInt64BE((index % L1_PAGE_ENTRIES) * 8);
  }

  private l2Table(offset: bigint): Buffer {
    let table = this.l2Tables.get(offset);
    if (!table) {
      if (offset % BigInt(this.clusterBytes) !== 0n) throw new NotReadNatively('an L2 table is not cluster-aligned');
      if (this.l2Tables.size >= L2_CACHE_TABLES) this.l2Tables.clear();
      table = this.hostRead(offset, this.clusterBytes, 'L2 table');
      this.l2Tables.set(offset, table);
    }
    return table;
  }

  private decompress(entry: bigint): Buffer {
    if (this.lastCompressed?.entry === entry) return this.lastCompressed.data;
    if (this.layer.header.compressionType !== 0) throw new NotReadNatively('a compressed cluster uses zstd');
    const bits = this.layer.header.clusterBits;
    const shift = BigInt(62 - (bits - 8));
    const hostOffset = entry & ((1n << shift) - 1n);
    const sectors = Number((entry >> shift) & ((1n << BigInt(bits - 8)) - 1n)) + 1;
    const stored = sectors * 512 - Number(hostOffset & 511n);
    const available = Math.min(stored, Math.max(0, this.layer.fileBytes - Number(hostOffset)));
    let data: Buffer;
    try {
      data = inflateRawSync(this.hostRead(hostOffset, available, 'compressed cluster'), { maxOutputLength: this.clusterBytes });
    } catch (error) {
      if (error instanceof NotReadNatively) throw error;
      throw new NotReadNatively(`a compressed cluster does not inflate (${(error as Error).message})`);
    }
    if (data.length !== this.clusterBytes) throw new NotReadNatively('a compressed cluster inflates to less than a cluster');
    this.lastCompressed = { entry, data };
    return data;
  }

  /** Copies [offset, offset+length) into out at `at`; the range lies inside one (sub)cluster of the layer. */
  private readPiece(offset: number, length: number, out: Buffer, at: number): void {
    const perL1 = this.clusterBytes * this.entriesPerL2;
    const l2Offset = this.l1Entry(Math.floor(offset / perL1)) & OFFSET_MASK;
    if (l2Offset === 0n) return void this.below(offset, length).copy(out, at);
    const table = this.l2Table(l2Offset);
    const slot = Math.floor((offset % perL1) / this.clusterBytes) * (this.extendedL2 ? 16 : 8);
    const entry = table.readBigUInt64BE(slot);
    const within = offset % this.clusterBytes;
    if (entry & COMPRESSED) return void this.decompress(entry).copy(out, at, within, within + length);
    const hostCluster = entry & OFFSET_MASK;
    if (hostCluster % BigInt(this.clusterBytes) !== 0n) throw new NotReadNatively('a data cluster is not cluster-aligned');
    let state: 'zero' | 'data' | 'below';
    if (this.extendedL2) {
      const bitmap = table.readBigUInt64BE(slot + 8);
      const sub = BigInt(Math.floor(within / (this.clusterBytes / 32)));
      if ((bitmap >> sub) & (bitmap >> (sub + 32n)) & 1n) throw new NotReadNatively('a subcluster is marked both allocated and zero');
      state = (bitmap >> (sub + 32n)) & 1n ? 'zero' : (bitmap >> sub) & 1n ? 'data' : 'below';
    } else {
      // QEMU reports a zero flag in a version 2 image as corruption: qemu-io gives that answer, not a guess here.
      if (entry & ZERO_FLAG && this.layer.header.version < 3) throw new NotReadNatively('a zero flag in a version 2 image');
      state = entry & ZERO_FLAG ? 'zero' : hostCluster !== 0n ? 'data' : 'below';
    }
    if (state === 'zero') return void out.fill(0, at, at + length);
    if (state === 'below') return void this.below(offset, length).copy(out, at);
    if (hostCluster === 0n) throw new NotReadNatively('an allocated subcluster has no host cluster');
    this.hostRead(hostCluster + BigInt(within), length, 'data cluster').copy(out, at);
  }

  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    const piece = this.extendedL2 ? this.clusterBytes / 32 : this.clusterBytes;
    let done = 0;
    while (done < length) {
      const at = offset + done;
      if (at >= this.sizeBytes) break; // past the layer's virtual size: zeros
      const chunk = Math.min(length - done, piece - (at % piece), this.sizeBytes - at);
      this.readPiece(at, chunk, out, done);
      done += chunk;
    }
    return out;
  }
}

/** A reader of the chain's guest bytes; the layers' fds stay their owner's. */
export function qcow2Reader(layers: readonly ReaderLayer[]): GuestReader {
  let below = (_offset: number, length: number): Buffer => Buffer.alloc(length);
  let sizeBytes = 0;
  for (const layer of [...layers].reverse()) {
    const lower = below;
    if (layer.header) {
      const reader = new LayerReader({ ...layer, header: layer.header }, lower);
      below = (offset, length) => reader.read(offset, length);
      sizeBytes = reader.sizeBytes;
    } else {
      // A raw layer: the file itself, zeros past its end (what QEMU reads there).
      below = (offset, length) => rawRead(layer, offset, length);
      sizeBytes = layer.fileBytes;
    }
  }
  const top = below;
  return { sizeBytes, read: (offset, length) => top(offset, length) };
}

function rawRead(layer: ReaderLayer, offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const inFile = Math.max(0, Math.min(length, layer.fileBytes - offset));
  if (inFile > 0) readFully(layer.fd, inFile, offset).copy(out);
  return out;
}
