// The qcow2 header, its extensions and its backing file name, decoded natively so that a hostile image is
// judged before any qemu tool opens it. Offsets: QEMU docs/interop/qcow2.txt ("Header", "Header extensions").
// Decoding does not judge; findings() does, one rule per sentence.

export const QCOW2_MAGIC = 0x514649fb;
/** qcow2.txt: the backing file name is at most 1023 bytes. */
export const MAX_BACKING_NAME_BYTES = 1023;
const V2_HEADER_BYTES = 72;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTENDED_L2 = 1n << 4n;
const KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;

/** Header extension types (qcow2.txt, "Header extensions"). */
export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FULL_DISK_ENCRYPTION = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export interface Qcow2Extension {
  type: number;
  data: Buffer;
}

export interface Qcow2Header {
  magic: number;
  version: number;
  backingNameOffset: bigint;
  backingNameBytes: number;
  clusterBits: number;
  sizeBytes: bigint;
  cryptMethod: number;
  l1Entries: number;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  snapshotCount: number;
  snapshotsOffset: bigint;
  incompatibleFeatures: bigint;
  /** 0 zlib, 1 zstd (qcow2.txt: byte 104, present when the header is longer than 104 bytes). */
  compressionType: number;
  headerBytes: number;
  extensions: Qcow2Extension[];
  /** Raw bytes of the backing file name; undefined when the image has no backing file. */
  backingName?: Buffer;
  /** From the backing format extension, when present. */
  backingFormat?: string;
  /** Set when the extension area ran past the bytes read or an extension's length is impossible. */
  extensionsTruncated: boolean;
}

/** Bytes a caller must read from the start of the file to decode the header: the first cluster, capped. */
export const HEADER_READ_BYTES = 2 * 1024 * 1024;

function decodeExtensions(buf: Buffer, start: number): { extensions: Qcow2Extension[]; truncated: boolean } {
  const extensions: Qcow2Extension[] = [];
  let at = start;
  while (at + 8 <= buf.length) {
    const type = buf.readUInt32BE(at);
    const length = buf.readUInt32BE(at + 4);
    if (type === EXT_END) return { extensions, truncated: false };
    if (at + 8 + length > buf.length) return { extensions, truncated: true };
    extensions.push({ type, data: buf.subarray(at + 8, at + 8 + length) });
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return { extensions, truncated: true };
}

/** Decodes what `buf` (the file's first bytes) holds; never throws on bad values, findings() judges them. */
export function decodeQcow2Header(buf: Buffer): Qcow2Header | undefined {
  if (buf.length < V2_HEADER_BYTES || buf.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
  const version = buf.readUInt32BE(4);
  const v3 = version >= 3 && buf.length >= 104;
  const headerBytes = v3 ? buf.readUInt32BE(100) : V2_HEADER_BYTES;
  const header: Qcow2Header = {
    magic: QCOW2_MAGIC,
    version,
    backingNameOffset: buf.readBigUInt64BE(8),
    backingNameBytes: buf.readUInt32BE(16),
    clusterBits: buf.readUInt32BE(20),
    sizeBytes: buf.readBigUInt64BE(24),
    cryptMethod: buf.readUInt32BE(32),
    l1Entries: buf.readUInt32BE(36),
    l1TableOffset: buf.readBigUInt64BE(40),
    refcountTableOffset: buf.readBigUInt64BE(48),
    refcountTableClusters: buf.readUInt32BE(56),
    snapshotCount: buf.readUInt32BE(60),
    snapshotsOffset: buf.readBigUInt64BE(64),
    incompatibleFeatures: v3 ? buf.readBigUInt64BE(72) : 0n,
    compressionType: v3 && headerBytes > 104 && buf.length > 104 ? buf[104]! : 0,
    headerBytes,
    extensions: [],
    extensionsTruncated: false,
  };
  const clusterBytes = header.clusterBits >= 9 && header.clusterBits <= 21 ? 2 ** header.clusterBits : 0;
  // Extensions live between the header and the end of the first cluster (qcow2.txt).
  if (clusterBytes > 0 && headerBytes >= V2_HEADER_BYTES && headerBytes < clusterBytes) {
    const decoded = decodeExtensions(buf.subarray(0, Math.min(buf.length, clusterBytes)), headerBytes);
    header.extensions = decoded.extensions;
    header.extensionsTruncated = decoded.truncated;
  }
  const backingFormat = header.extensions.find((e) => e.type === EXT_BACKING_FORMAT);
  if (backingFormat) header.backingFormat = backingFormat.data.toString('latin1');
  const offset = Number(header.backingNameOffset);
  if (header.backingNameOffset !== 0n && header.backingNameBytes > 0 && offset + header.backingNameBytes <= buf.length) {
    header.backingName = buf.subarray(offset, offset + header.backingNameBytes);
  }
  return header;
}

/** A table of `bytes` at `offset`: cluster-aligned and inside the file (qcow2.txt: tables start on a cluster). */
function tableFinding(what: string, offset: bigint, bytes: bigint, clusterBytes: bigint, fileBytes: bigint): string | undefined {
  if (offset === 0n || offset % clusterBytes !== 0n) return `its ${what} offset ${offset} is not a non-zero multiple of the cluster size`;
  if (offset + bytes > fileBytes) return `its ${what} (${bytes} bytes at ${offset}) lies past the end of the ${fileBytes}-byte file`;
  return undefined;
}

/** qcow2.txt: a snapshot table entry is at least 40 bytes (the fixed part), padded to a multiple of 8. */
const SNAPSHOT_ENTRY_MIN_BYTES = 40n;
/**
 * Internal snapshots this tool handles. QEMU allows 65,536; a header claiming that many cost qemu-img 54 s and
 * 352 MiB before any rule could refuse it, and no VM manager keeps more than a few dozen.
 */
export const MAX_SNAPSHOTS = 1024;

/**
 * Metadata that must not share bytes: the header cluster, the L1, refcount and snapshot tables (the snapshot table
 * at its smallest size). QEMU finds such overlaps only once it runs, and then with many lines of output.
 */
function overlapFindings(header: Qcow2Header, cluster: bigint): string[] {
  const regions: [string, bigint, bigint][] = [
    ['header cluster', 0n, cluster],
    ['L1 table', header.l1TableOffset, BigInt(header.l1Entries) * 8n],
    ['refcount table', header.refcountTableOffset, BigInt(header.refcountTableClusters) * cluster],
    ['snapshot table', header.snapshotsOffset, BigInt(header.snapshotCount) * SNAPSHOT_ENTRY_MIN_BYTES],
  ];
  const present = regions.filter(([, , bytes]) => bytes > 0n);
  const findings: string[] = [];
  present.forEach(([name, start, bytes], i) => {
    for (const [other, otherStart, otherBytes] of present.slice(i + 1)) {
      if (start < otherStart + otherBytes && otherStart < start + bytes) findings.push(`its ${name} and its ${other} overlap`);
    }
  });
  return findings;
}

/** The rules a header must meet before anything opens the image; one sentence per violated rule. */
export function headerFindings(header: Qcow2Header, fileBytes: number): string[] {
  const findings: string[] = [];
  if (header.clusterBits >= 9 && header.clusterBits <= 21) {
    const cluster = 1n << BigInt(header.clusterBits);
    const file = BigInt(fileBytes);
    const tables = [
      header.l1Entries > 0 ? tableFinding('L1 table', header.l1TableOffset, BigInt(header.l1Entries) * 8n, cluster, file) : undefined,
      tableFinding('refcount table', header.refcountTableOffset, BigInt(header.refcountTableClusters) * cluster, cluster, file),
      header.snapshotCount > 0 ? tableFinding('snapshot table', header.snapshotsOffset, BigInt(header.snapshotCount) * SNAPSHOT_ENTRY_MIN_BYTES, cluster, file) : undefined,
    ];
    for (const finding of tables) if (finding !== undefined) findings.push(finding);
    findings.push(...overlapFindings(header, cluster));
  }
  if (header.version !== 2 && header.version !== 3) findings.push(`its qcow2 version is ${header.version}, not 2 or 3`);
  if (header.clusterBits < 9 || header.clusterBits > 21) findings.push(`its cluster size (2^${header.clusterBits} bytes) is outside 512 bytes to 2 MiB`);
  if (header.version === 3 && (header.headerBytes < 104 || header.headerBytes % 8 !== 0)) findings.push(`its header length ${header.headerBytes} is invalid`);
  if (header.extensionsTruncated) findings.push('its header extensions run past the first cluster');
  if (header.backingNameOffset !== 0n) {
    if (header.backingNameBytes === 0 || header.backingNameBytes > MAX_BACKING_NAME_BYTES) {
      findings.push(`its backing file name is ${header.backingNameBytes} bytes long (1 to ${MAX_BACKING_NAME_BYTES} allowed)`);
    } else if (header.backingName === undefined) {
      findings.push('its backing file name lies outside the header cluster');
    }
  }
  return findings;
}

/** Features this tool cannot honour safely: each is a reason to refuse the image as not supported. */
export function unsupportedFeatures(header: Qcow2Header): string[] {
  const reasons: string[] = [];
  if (header.cryptMethod !== 0 || header.extensions.some((e) => e.type === EXT_FULL_DISK_ENCRYPTION)) {
    reasons.push('it is encrypted (qcow2 encryption or LUKS)');
  }
  if ((header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n || header.extensions.some((e) => e.type === EXT_DATA_FILE)) {
    reasons.push('it keeps its data in an external data file');
  }
  if (header.snapshotCount > MAX_SNAPSHOTS) {
    reasons.push(`it has ${header.snapshotCount} internal snapshots, more than the ${MAX_SNAPSHOTS} this tool handles (delete some with qemu-img snapshot -d)`);
  }
  const unknown = header.incompatibleFeatures & ~KNOWN_INCOMPAT;
  if (unknown !== 0n) reasons.push(`it uses incompatible features this tool does not know (bits 0x${unknown.toString(16)})`);
  return reasons;
}

export function isMarkedCorrupt(header: Qcow2Header): boolean {
  return (header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
}
