// Validation of one delta: every rule of a ploop check, one rule → one finding → one sentence.
// Rules: QEMU docs/interop/parallels.txt (header, BAT requirements, format extension) and
// OpenVZ ploop lib/check.c (signature, type, is_valid_blocksize, first block offset, slot checks).
import { entryToOffset } from './bat.js';
import {
  FLAG_VERSION_CONVERT,
  HEADER_BYTES,
  HEADER_VERSION,
  IN_USE_CLOSED_V20,
  IN_USE_CLOSED_V21,
  IN_USE_OPEN,
  type PloopHeader,
  clusterBytes,
  dataOffsetBytes,
  effectiveSizeSectors,
  formatVersion,
} from './header.js';

export type RuleId =
  | 'signature'
  | 'version'
  | 'cluster-size'
  | 'size-high-bits'
  | 'bat-entries'
  | 'data-offset'
  | 'table-past-eof'
  | 'in-use-value'
  | 'in-use-set'
  | 'version-convert'
  | 'entry-below-data'
  | 'entry-past-eof'
  | 'entry-misaligned'
  | 'entry-duplicate'
  | 'slack-nonzero'
  | 'ext-offset'
  | 'ext-magic'
  | 'tail-leak';

export interface Finding {
  rule: RuleId;
  message: string;
  /** True when the state is one an interrupted writer leaves behind and recoverDelta() can finish. */
  recoverable: boolean;
}

export const MIN_CLUSTER_SECTORS = 64; // 32 KiB
export const MAX_CLUSTER_SECTORS = 131072; // 64 MiB
export const EXTENSION_MAGIC = 0xab234cef23dcea87n;

export function isValidClusterSectors(sectors: number): boolean {
  return sectors >= MIN_CLUSTER_SECTORS && sectors <= MAX_CLUSTER_SECTORS && (sectors & (sectors - 1)) === 0;
}

export interface DeltaFacts {
  header: PloopHeader;
  /** Every slot of the table region (batEntries entries, then the slack up to the data area). */
  bat: Uint32Array;
  fileSizeBytes: number;
  /** The format extension cluster, when the header points at one that lies inside the file. */
  extension?: Uint8Array;
}

/** Whether the format extension counts: parallels.txt says in_use 0 means old software that ignores it. */
export function extensionActive(header: PloopHeader): boolean {
  return header.extOffsetSectors !== 0 && header.inUse !== IN_USE_CLOSED_V20;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export function validateDelta(header: PloopHeader, bat: Uint32Array, fileSizeBytes: number, extension?: Uint8Array): Finding[] {
  const findings: Finding[] = [];
  const add = (rule: RuleId, message: string, recoverable = false): void => {
    findings.push({ rule, message, recoverable });
  };

  const version = formatVersion(header);
  if (version === undefined) {
    add('signature', `the signature is not "WithoutFreeSpace" or "WithouFreSpacExt"; this is not a ploop delta`);
    return findings;
  }
  if (header.version !== HEADER_VERSION) add('version', `the header version is ${header.version}, expected ${HEADER_VERSION}`);
  if (!isValidClusterSectors(header.clusterSectors)) {
    add('cluster-size', `the cluster size of ${header.clusterSectors} sectors is not a power of two from 32 KiB to 64 MiB`);
    return findings;
  }
  const cluster = clusterBytes(header);
  if (version === 1 && header.sizeSectors >= 2 ** 32) {
    add('size-high-bits', 'the high half of the size field is not zero in a "WithoutFreeSpace" delta');
  }
  const sizeSectors = effectiveSizeSectors(header);
  const expectedEntries = Math.ceil(sizeSectors / header.clusterSectors);
  if (header.batEntries !== expectedEntries) {
    add('bat-entries', `the BAT has ${header.batEntries} entries but a size of ${sizeSectors} sectors needs ${expectedEntries}`);
  }

  const tableEnd = HEADER_BYTES + 4 * header.batEntries;
  const dataStart = dataOffsetBytes(header);
  // ploop_check: l1_slots = m_FirstBlockOffset / cluster; refused unless it divides exactly and is not 0,
  // whatever the version (QEMU reads a v1 offset of 0 as "right after the BAT"; ploop does not).
  if (header.dataOffsetSectors === 0 || header.dataOffsetSectors % header.clusterSectors !== 0) {
    add(
      'data-offset',
      `the first data block offset is ${header.dataOffsetSectors} sectors, but ploop requires a non-zero offset that is a multiple of the cluster size (${header.clusterSectors} sectors), on "WithoutFreeSpace" (v1) deltas too`,
    );
  } else if (dataStart < tableEnd) {
    add('data-offset', `the data area starts at byte ${dataStart}, inside the BAT that ends at byte ${tableEnd}`);
  }
  if (fileSizeBytes < Math.min(tableEnd, dataStart) || fileSizeBytes < tableEnd) {
    add('table-past-eof', `the file ends at byte ${fileSizeBytes}, before the end of its BAT at byte ${tableEnd}; it is truncated`);
  }

  if (header.inUse === IN_USE_OPEN) {
    add('in-use-set', 'the delta is marked in use: a writer did not close it cleanly', true);
  } else if (header.inUse !== IN_USE_CLOSED_V20 && header.inUse !== IN_USE_CLOSED_V21) {
    add('in-use-value', `the in-use field holds 0x${header.inUse.toString(16)}, which is not a known value`);
  }
  if ((header.flags & FLAG_VERSION_CONVERT) !== 0) {
    add('version-convert', 'the delta is flagged as being converted between format versions');
  }

  // BAT entries: in range, aligned, unique (parallels.txt "BAT"; ploop check_one_slot).
  const below: number[] = [];
  const pastEof: number[] = [];
  const misaligned: number[] = [];
  const duplicate: number[] = [];
  const seen = new Set<number>();
  let usedEnd = dataStart;
  const entries = Math.min(header.batEntries, bat.length);
  for (let i = 0; i < entries; i++) {
    const entry = bat[i]!;
    if (entry === 0) continue;
    const offset = entryToOffset(header, entry);
    if (offset < dataStart) below.push(i);
    else if ((offset - dataStart) % cluster !== 0) misaligned.push(i);
    else if (offset + cluster > fileSizeBytes) pastEof.push(i);
    else if (seen.has(offset)) duplicate.push(i);
    else {
      seen.add(offset);
      usedEnd = Math.max(usedEnd, offset + cluster);
    }
  }
  const first = (list: number[]): string => `slot ${list[0]} holds ${bat[list[0]!]}`;
  if (below.length > 0) add('entry-below-data', `${plural(below.length, 'BAT entry')} point before the data area (${first(below)})`);
  if (misaligned.length > 0) add('entry-misaligned', `${plural(misaligned.length, 'BAT entry')} are not aligned to a cluster (${first(misaligned)})`);
  if (pastEof.length > 0) add('entry-past-eof', `${plural(pastEof.length, 'BAT entry')} point past the end of the file (${first(pastEof)})`);
  if (duplicate.length > 0) add('entry-duplicate', `${plural(duplicate.length, 'BAT entry')} point at a cluster already used by another entry (${first(duplicate)})`);

  let slack = 0;
  for (let i = header.batEntries; i < bat.length; i++) if (bat[i] !== 0) slack++;
  if (slack > 0) {
    add('slack-nonzero', `${plural(slack, 'BAT slot')} past the end of the disk are not zero`, header.inUse === IN_USE_OPEN);
  }

  if (extensionActive(header)) {
    const offset = header.extOffsetSectors * 512;
    if (offset < dataStart || (offset - dataStart) % cluster !== 0 || offset + cluster > fileSizeBytes || seen.has(offset)) {
      add('ext-offset', `the format extension offset of ${header.extOffsetSectors} sectors is outside the data area, misaligned, or shared with data`);
    } else {
      usedEnd = Math.max(usedEnd, offset + cluster);
      if (extension !== undefined && extension.length >= 8) {
        const magic = Buffer.from(extension.buffer, extension.byteOffset, 8).readBigUInt64LE(0);
        if (magic !== EXTENSION_MAGIC) add('ext-magic', 'the format extension cluster does not start with its magic number');
      }
    }
  }

  if (fileSizeBytes > usedEnd && findings.every((f) => f.rule !== 'table-past-eof')) {
    add('tail-leak', `${fileSizeBytes - usedEnd} bytes at the end of the file are not used by any cluster`, true);
  }
  return findings;
}

/** Findings that forbid using the delta at all (recoverable ones only need recoverDelta()). */
export function fatalFindings(findings: readonly Finding[]): Finding[] {
  return findings.filter((f) => !f.recoverable);
}
