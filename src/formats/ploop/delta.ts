// One delta file on disk: positional reads and writes through a file descriptor, the header and
// BAT loaded and validated, the durable-write primitives that every modifying operation uses.
import { closeSync, fstatSync, fsyncSync, ftruncateSync } from 'node:fs';
import { ImageInvalid, NotSupported, ToolError } from '../../util/errors.js';
import { readFully, writeFully } from '../../util/file-io.js';
import { debug } from '../../util/log.js';
import { FileRefused, identityOf, openRegularFile, stillNames } from '../../util/safe-file.js';
import { decodeBat, encodeEntry, entryToOffset, slotOffset, tableSlots } from './bat.js';
import { type Finding, extensionActive, fatalFindings, validateDelta } from './check.js';
import {
  FLAG_EMPTY,
  HEADER_BYTES,
  IN_USE_CLOSED_V20,
  IN_USE_OPEN,
  type PloopHeader,
  clusterBytes,
  dataOffsetBytes,
  decodeHeader,
  encodeHeader,
} from './header.js';

export interface Delta {
  path: string;
  /** Opened once, without following a link; every read and write of the delta goes through it. */
  fd: number;
  writable: boolean;
  /** Device and inode as validated (identityOf): a rename or unlink of `path` checks the name still holds it. */
  identity: string;
  /** Names (hard links) the file had when opened. */
  links: number;
  header: PloopHeader;
  /** All slots of the table region; the first header.batEntries are the BAT proper. */
  bat: Uint32Array;
  fileSizeBytes: number;
  /** Recoverable findings left after opening (fatal ones throw). */
  findings: Finding[];
  /** Called after every durable (fsynced) change; the crash tests kill the process here. */
  onDurable?: (what: string) => void;
}

/** What the planners need of one delta: plain data, no file handle. */
export interface DeltaLayout {
  header: PloopHeader;
  /** BAT slots (at least header.batEntries of them). */
  bat: Uint32Array;
  fileSizeBytes: number;
}

export interface OpenOptions {
  write?: boolean;
}

/**
 * Opens a delta once (a regular file only: no link followed, no FIFO or device opened), reads and validates it;
 * throws NotSupported for what is not a regular file, ImageInvalid naming every fatal finding.
 */
export function openDelta(path: string, options: OpenOptions = {}): Delta {
  let opened;
  try {
    opened = openRegularFile(path, { write: options.write === true });
  } catch (error) {
    if (error instanceof FileRefused) throw new NotSupported(`The ploop delta "${path}" is refused: ${error.detail}. A delta must be a regular file of the image's folder. Nothing was changed.`);
    throw error;
  }
  const { fd, stats } = opened;
  try {
    const fileSizeBytes = stats.size;
    if (fileSizeBytes < HEADER_BYTES) {
      throw new ImageInvalid(`The ploop delta "${path}" is invalid`, [`the file is ${fileSizeBytes} bytes, shorter than the 64-byte header`]);
    }
    const header = decodeHeader(readFully(fd, HEADER_BYTES, 0));
    // Only read the table region once the header is known to be sane enough to size it.
    const pre = validateDelta(header, new Uint32Array(0), fileSizeBytes).filter((f) =>
      ['signature', 'version', 'cluster-size', 'data-offset', 'table-past-eof'].includes(f.rule),
    );
    if (pre.length > 0) throw new ImageInvalid(`The ploop delta "${path}" is invalid`, pre.map((f) => f.message));
    const slots = tableSlots(header, fileSizeBytes);
    const bat = decodeBat(readFully(fd, slots * 4, HEADER_BYTES));
    let extension: Buffer | undefined;
    if (extensionActive(header)) {
      const offset = header.extOffsetSectors * 512;
      if (offset + clusterBytes(header) <= fileSizeBytes) extension = readFully(fd, Math.min(clusterBytes(header), 4096), offset);
    }
    const findings = validateDelta(header, bat, fileSizeBytes, extension);
    const fatal = fatalFindings(findings);
    if (fatal.length > 0) throw new ImageInvalid(`The ploop delta "${path}" is invalid`, fatal.map((f) => f.message));
    return { path, fd, writable: options.write ?? false, identity: identityOf(stats), links: stats.nlink, header, bat, fileSizeBytes, findings };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

export function closeDelta(delta: Delta): void {
  closeSync(delta.fd);
}

/**
 * Right before a tool is handed the delta by its name (it cannot be handed the open file): the name must still
 * be the file that was validated, or the run stops. What is left (a swap between this check and the tool's own
 * open) is the window docs/security.md describes.
 */
export function requireStillNamed(delta: Pick<Delta, 'path' | 'identity'>, tool: string): void {
  if (!stillNames(delta.path, delta.identity)) {
    throw new ToolError('refused', `The delta "${delta.path}" is no longer the file that was validated (it was renamed or replaced meanwhile); stopped before handing it to ${tool}. Find out who changes the image's folder, then run the command again.`);
  }
}

/** Bytes the delta occupies on the host (st_blocks of the open file, not of whatever the name holds now). */
export function hostBytesOf(delta: Delta): number {
  return fstatSync(delta.fd).blocks * 512;
}

/** Host byte offset of virtual cluster `index` in this delta, or undefined when this delta does not hold it. */
export function clusterHostOffset(delta: Delta, index: number): number | undefined {
  if (index >= delta.header.batEntries) return undefined;
  const entry = delta.bat[index]!;
  return entry === 0 ? undefined : entryToOffset(delta.header, entry);
}
/** The end of the highest cluster in use (BAT or format extension), never before the data area. */
export function usedEndBytes(delta: Pick<Delta, 'header' | 'bat'>): number {
  let end = dataOffsetBytes(delta.header);
  const cluster = clusterBytes(delta.header);
  for (let i = 0; i < delta.header.batEntries; i++) {
    const entry = delta.bat[i]!;
    if (entry !== 0) end = Math.max(end, entryToOffset(delta.header, entry) + cluster);
  }
  if (extensionActive(delta.header)) end = Math.max(end, delta.header.extOffsetSectors * 512 + cluster);
  return end;
}

function durable(delta: Delta, what: string): void {
  fsyncSync(delta.fd);
  debug(`ploop: ${delta.path}: ${what}`);
  delta.onDurable?.(what);
}

function requireWritable(delta: Delta): void {
  if (!delta.writable) throw new Error(`internal: ${delta.path} was opened read-only`);
}

/** Writes the header in one 64-byte write (inside one sector, so it lands whole) and fsyncs. */
export function writeHeader(delta: Delta, header: PloopHeader, what = 'header written'): void {
  requireWritable(delta);
  writeFully(delta.fd, encodeHeader(header), 0);
  delta.header = { ...header };
  // A grow's longer table: the session's handle outlives the header change (a resize then commits its overlay
  // through it), so the new slots are read from the file, where the plan made them zero or moved data out.
  if (header.batEntries > delta.bat.length) {
    const grown = new Uint32Array(header.batEntries);
    grown.set(delta.bat);
    grown.set(decodeBat(readFully(delta.fd, 4 * (header.batEntries - delta.bat.length), slotOffset(delta.bat.length))), delta.bat.length);
    delta.bat = grown;
  }
  durable(delta, what);
}

/** Points BAT slot `index` at `entry` (0 releases it) and fsyncs. */
export function writeEntry(delta: Delta, index: number, entry: number): void {
  requireWritable(delta);
  writeFully(delta.fd, encodeEntry(entry), slotOffset(index));
  if (index >= delta.bat.length) {
    const grown = new Uint32Array(index + 1);
    grown.set(delta.bat);
    delta.bat = grown;
  }
  delta.bat[index] = entry;
  durable(delta, `BAT slot ${index} = ${entry}`);
}

/** Points consecutive BAT slots from `first` at `entries` in one write and fsyncs. */
export function writeEntries(delta: Delta, first: number, entries: readonly number[]): void {
  requireWritable(delta);
  const buf = Buffer.alloc(entries.length * 4);
  entries.forEach((entry, i) => buf.writeUInt32LE(entry, 4 * i));
  writeFully(delta.fd, buf, slotOffset(first));
  if (first + entries.length > delta.bat.length) {
    const grown = new Uint32Array(first + entries.length);
    grown.set(delta.bat);
    delta.bat = grown;
  }
  entries.forEach((entry, i) => (delta.bat[first + i] = entry));
  durable(delta, `BAT slots ${first}..${first + entries.length - 1} written`);
}

/** Zeroes BAT slots [from, to) in one write and fsyncs. */
export function zeroEntries(delta: Delta, from: number, to: number): void {
  requireWritable(delta);
  if (to <= from) return;
  writeFully(delta.fd, Buffer.alloc((to - from) * 4), slotOffset(from));
  for (let i = from; i < Math.min(to, delta.bat.length); i++) delta.bat[i] = 0;
  durable(delta, `BAT slots ${from}..${to - 1} zeroed`);
}

/** Writes data without fsync; callers group several writes and call syncData. */
export function writeData(delta: Delta, data: Uint8Array, position: number): void {
  requireWritable(delta);
  writeFully(delta.fd, data, position);
  delta.fileSizeBytes = Math.max(delta.fileSizeBytes, position + data.length);
}

export function syncData(delta: Delta, what: string): void {
  durable(delta, what);
}

export function truncateDelta(delta: Delta, sizeBytes: number): void {
  requireWritable(delta);
  ftruncateSync(delta.fd, sizeBytes);
  delta.fileSizeBytes = sizeBytes;
  durable(delta, `file truncated to ${sizeBytes} bytes`);
}

/** The in-use protocol: marks the delta open for writing before the first change (ploop's m_DiskInUse). */
export function markInUse(delta: Delta): void {
  if (delta.header.inUse === IN_USE_OPEN) return;
  const header = { ...delta.header, inUse: IN_USE_OPEN };
  if (delta.header.extOffsetSectors !== 0) {
    // The extension (a dirty bitmap) describes the old content; once we change the file it is stale.
    // parallels.txt: extensions without NECESSARY may be dropped; refuse when one is NECESSARY.
    refuseNecessaryExtension(delta);
    header.extOffsetSectors = 0;
  }
  writeHeader(delta, header, 'in-use flag set');
}

/**
 * The flags a clean close leaves: CIF_Empty set exactly when the file holds no cluster past the BAT area
 * (no BAT entry, no tail), the rule of ploop 1.x's check (lib/check.c: alloc_head <= l1_slots), which
 * rewrites a wrong value and so fails a read-only check; ploop init sets it, later ploop ignores it.
 */
export function closedFlags(delta: Pick<Delta, 'header' | 'bat' | 'fileSizeBytes'>): number {
  const dataStart = dataOffsetBytes(delta.header);
  const holdsData = usedEndBytes(delta) > dataStart || delta.fileSizeBytes > dataStart;
  return holdsData ? delta.header.flags & ~FLAG_EMPTY : delta.header.flags | FLAG_EMPTY;
}

/**
 * The one place a delta is closed after our changes: in-use 0, as ploop's own check writes it (ploop 1.x
 * check calls any other value "Dirty flag is set", and copy_delta refuses it), CIF_Empty brought up to
 * date, and the format-extension offset dropped as ploop's check drops it (in-use 0 makes an extension
 * void, parallels.txt). Also settles a delta written without the in-use protocol (merge's base).
 */
export function clearInUse(delta: Delta): void {
  const closed = { ...delta.header, inUse: IN_USE_CLOSED_V20, flags: closedFlags(delta), extOffsetSectors: 0 };
  const current = delta.header;
  if (closed.inUse === current.inUse && closed.flags === current.flags && closed.extOffsetSectors === current.extOffsetSectors) return;
  writeHeader(delta, closed, 'in-use flag cleared');
}

function refuseNecessaryExtension(delta: Delta): void {
  if (!extensionActive(delta.header)) return;
  const cluster = readFully(delta.fd, clusterBytes(delta.header), delta.header.extOffsetSectors * 512);
  let at = 24; // after magic and MD5 (parallels.txt "Format Extension")
  while (at + 24 <= cluster.length) {
    const magic = cluster.readBigUInt64LE(at);
    if (magic === 0n) return;
    const flags = cluster.readBigUInt64LE(at + 8);
    const size = cluster.readUInt32LE(at + 16);
    if ((flags & 1n) !== 0n) {
      throw new NotSupported(
        `The ploop delta "${delta.path}" has a format extension marked necessary (0x${magic.toString(16)}), which this tool cannot keep; it leaves the image unchanged.`,
      );
    }
    at += 24 + Math.ceil(size / 8) * 8;
  }
}

/**
 * Finishes or rolls back what an interrupted writer left: BAT slots past the disk end zeroed (a
 * shrink that wrote its header), unreferenced clusters at the tail cut off (a copy that never got
 * its BAT entry), then the in-use mark cleared. Every step is idempotent. Returns what it did.
 */
export function recoverDelta(delta: Delta): string[] {
  const done: string[] = [];
  if (delta.findings.length === 0) return done;
  requireWritable(delta);
  const slackNonZero = delta.bat.slice(delta.header.batEntries).some((v) => v !== 0);
  if (slackNonZero && delta.header.inUse === IN_USE_OPEN) {
    zeroEntries(delta, delta.header.batEntries, delta.bat.length);
    done.push('zeroed BAT slots past the end of the disk');
  }
  const end = usedEndBytes(delta);
  if (delta.fileSizeBytes > end) {
    truncateDelta(delta, end);
    done.push("cut unused clusters off the end of the file");
  }
  if (delta.header.inUse === IN_USE_OPEN) {
    clearInUse(delta);
    done.push('cleared the in-use mark');
  }
  delta.findings = [];
  return done;
}
