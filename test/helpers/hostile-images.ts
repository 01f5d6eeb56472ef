// Hand-crafted hostile images for the confinement tests: qcow2 header fields and extensions written natively
// (offsets from QEMU's docs/interop/qcow2.txt), ploop folders with tampered descriptors, FIFOs, sockets, devices.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { BASE_GUID, descriptorXml, ROOT_PARENT, TOP_GUID } from './ploop.js';

/** Header fields of qcow2 version 3, as [offset, bytes]. */
export const QCOW2 = {
  backingFileOffset: [8, 8],
  backingFileSize: [16, 4],
  clusterBits: [20, 4],
  size: [24, 8],
  cryptMethod: [32, 4],
  l1Size: [36, 4],
  l1TableOffset: [40, 8],
  refcountTableOffset: [48, 8],
  snapshotCount: [60, 4],
  snapshotsOffset: [64, 8],
  incompatibleFeatures: [72, 8],
  headerLength: [100, 4],
} as const;

const EXT_BACKING_FORMAT = 0xe2792aca;
/** Where crafted backing names are written: inside cluster 0, past any extension qemu-img writes. */
const BACKING_NAME_AT = 4096;

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const out = Buffer.alloc(length);
    readSync(fd, out, 0, length, offset);
    return out;
  } finally {
    closeSync(fd);
  }
}

export function writeAt(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Writes one header field (big-endian, as the spec says). */
export function setField(file: string, [offset, width]: readonly [number, number], value: bigint): void {
  const b = Buffer.alloc(width);
  if (width === 8) b.writeBigUInt64BE(value);
  else b.writeUInt32BE(Number(value));
  writeAt(file, offset, b);
}

export function getField(file: string, [offset, width]: readonly [number, number]): bigint {
  const b = readAt(file, offset, width);
  return width === 8 ? b.readBigUInt64BE() : BigInt(b.readUInt32BE());
}

/**
 * Rewrites the backing name and the backing-format extension of a qcow2 v3 file: `name` null drops the backing
 * file, `format` null drops the extension (other extensions are kept, in order).
 */
export function setBacking(file: string, name: string | null, format: string | null): void {
  const headerLength = Number(getField(file, QCOW2.headerLength));
  const area = readAt(file, headerLength, BACKING_NAME_AT - headerLength);
  const kept: Buffer[] = [];
  for (let at = 0; at + 8 <= area.length; ) {
    const type = area.readUInt32BE(at);
    const length = area.readUInt32BE(at + 4);
    if (type === 0) break;
    const padded = Math.ceil(length / 8) * 8;
    if (type !== EXT_BACKING_FORMAT) kept.push(area.subarray(at, at + 8 + padded));
    at += 8 + padded;
  }
  if (format !== null) {
    const data = Buffer.from(format, 'utf8');
    const ext = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
    ext.writeUInt32BE(EXT_BACKING_FORMAT, 0);
    ext.writeUInt32BE(data.length, 4);
    data.copy(ext, 8);
    kept.unshift(ext);
  }
  const rebuilt = Buffer.alloc(area.length);
  Buffer.concat(kept).copy(rebuilt);
  writeAt(file, headerLength, rebuilt);
  const bytes = Buffer.from(name ?? '', 'utf8');
  writeAt(file, BACKING_NAME_AT, Buffer.concat([bytes, Buffer.alloc(1024 - bytes.length)]));
  setField(file, QCOW2.backingFileOffset, name === null ? 0n : BigInt(BACKING_NAME_AT));
  setField(file, QCOW2.backingFileSize, BigInt(bytes.length));
}

export function qcow2(file: string, size = '64M', ...options: string[]): string {
  sh('qemu-img', 'create', '-q', '-f', 'qcow2', ...options, file, size);
  return file;
}

/** A qcow2 with `name` as its backing file (format recorded unless `format` is null), written natively. */
export function qcow2Backed(file: string, name: string, format: string | null = 'qcow2'): string {
  qcow2(file);
  setBacking(file, name, format);
  return file;
}

export function fifo(path: string): string {
  sh('mkfifo', path);
  return path;
}

/** A bound, unlistened AF_UNIX socket file (python keeps the inode when it exits without unlinking). */
export function socketFile(path: string): string {
  sh('python3', '-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', path);
  return path;
}

/** A character device node with /dev/zero's numbers: harmless to read, but never a regular file. */
export function zeroDevice(path: string): string {
  sh('mknod', path, 'c', '1', '5');
  return path;
}

/** A file of `sizeMiB` filled with a recognisable pattern (the victim's data). */
export function patterned(path: string, sizeMiB: number, byte = 0x5a): string {
  writeFileSync(path, Buffer.alloc(sizeMiB * 1024 * 1024, byte));
  return path;
}

/** An empty ploop delta (1 MiB clusters) as qemu-img writes it. */
export function ploopDelta(path: string, size = '64M'): string {
  sh('qemu-img', 'create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', path, size);
  return path;
}

/**
 * The descriptor of a ploop folder with the given delta names (top first), 64 MiB; `tweak` edits the XML text.
 * The deltas are not created: the case decides what they are.
 */
export function ploopDescriptor(files: readonly string[], tweak: (xml: string) => string = (x) => x): string {
  const guids = [TOP_GUID, BASE_GUID, '{22222222-3333-4444-5555-666666666666}'];
  const shots = files.map((file, i) => ({ guid: guids[i]!, file, parent: guids[i + 1] !== undefined && i + 1 < files.length ? guids[i + 1]! : ROOT_PARENT }));
  return tweak(descriptorXml({ sizeSectors: 64 * 2048, blockSizeSectors: 2048, shots }));
}

export function ploopFolder(folder: string, files: readonly string[] = ['root.hds'], tweak?: (xml: string) => string): string {
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'DiskDescriptor.xml'), ploopDescriptor(files, tweak));
  return folder;
}

/**
 * A merge --external leftovers note beside `topName` in `folder`, under the name our tool gives it: `body` lists the
 * intermediates (written in our format, with the top's identity), or is a text written as is (a note not ours).
 */
export function mergeNote(folder: string, topName: string, body: readonly string[] | string): string {
  const id = statSync(join(folder, topName), { bigint: true });
  const text = typeof body === 'string' ? body : JSON.stringify({ writer: 'prl-disk-tool merge --external', version: 2, top: { name: topName, dev: String(id.dev), ino: String(id.ino) }, intermediates: body });
  const path = join(folder, `.${topName}.merge-leftovers-0123abcd.prl-tmp`);
  writeFileSync(path, text);
  return path;
}
