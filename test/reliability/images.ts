// The small images the reliability suite works on, each built once per test as a pristine copy that every fault
// case clones: 256 MiB, GPT (MBR where a shrink needs room past the partition), ext4 with 8 MiB of files.
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { buildImage, type BuiltImage, type ImageFormat } from '../factory/index.js';
import { descriptorXml, readDescriptor } from '../factory/ploop.js';
import { addPloopSnapshot } from '../helpers/ploop.js';
import { settleDelta } from '../helpers/real-ploop-exec.js';

export const SIZE_MIB = 256;

/** A ploop delta's header bytes 44..47 while a writer has it open ("Ynot"). */
export const IN_USE_OPEN_MARK = Buffer.from('Ynot', 'latin1');

function sh(cmd: string, args: readonly string[], cwd?: string): void {
  const result = spawnSync(cmd, args, { encoding: 'utf8', cwd });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${result.stderr}`);
}

export function standard(format: ImageFormat, dir: string, extra: { preallocated?: boolean; table?: 'gpt' | 'mbr'; seed?: number; content?: 'ext4' | 'swap' } = {}): Promise<BuiltImage> {
  return buildImage({ format, table: extra.table ?? 'gpt', content: extra.content ?? 'ext4', dir, name: 'img', sizeMiB: SIZE_MIB, filesMiB: 8, deletedMiB: 8, preallocated: extra.preallocated ?? false, seed: extra.seed ?? 7 });
}

/**
 * An MBR image whose disk is 384 MiB while the last partition ends at 256 MiB, so that a plain `resize` can shrink
 * it. qcow2: qemu-img resize; ploop (which qemu-img cannot resize): re-encoded from a grown raw copy, with the
 * factory's own descriptor writer.
 */
export async function roomAtEnd(format: ImageFormat, dir: string, content: 'ext4' | 'swap' = 'ext4'): Promise<BuiltImage> {
  const image = await standard(format, dir, { table: 'mbr', content });
  if (format === 'qcow2') {
    sh('qemu-img', ['resize', '-f', 'qcow2', image.dataFile, '384M']);
    return image;
  }
  const raw = join(dir, 'grow.raw');
  sh('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', image.dataFile, raw]);
  sh('truncate', ['-s', '384M', raw]);
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', '-o', 'cluster_size=1M', raw, `${image.dataFile}.new`]);
  renameSync(`${image.dataFile}.new`, image.dataFile);
  settleDelta(image.dataFile);
  rmSync(raw);
  writeFileSync(join(dirname(image.dataFile), 'DiskDescriptor.xml'), descriptorXml((384 * 1024 * 1024) / 512, false));
  return image;
}

/** A qcow2 image with three internal snapshots of its current state (merge deletes them). */
export async function withSnapshots(dir: string): Promise<BuiltImage> {
  const image = await standard('qcow2', dir);
  for (const name of ['first', 'second', 'third']) sh('qemu-img', ['snapshot', '--image-opts', '-c', name, `driver=qcow2,file.driver=file,file.filename=${image.dataFile}`]);
  return image;
}

/** A ploop with one snapshot delta holding the built data over an empty base: merge must copy all of it down. */
export async function withPloopSnapshot(dir: string): Promise<BuiltImage> {
  const image = await standard('ploop', dir);
  addPloopSnapshot(image.hdd, SIZE_MIB, 'top');
  return image;
}

/** The number of deltas a ploop image's descriptor chains together. */
export function ploopDeltas(image: BuiltImage): number {
  return readDescriptor(image.hdd).chain.length;
}

/**
 * Leaks one cluster of a qcow2 image, as a write killed between its refcount update and its L2 update does: the
 * file grows by a cluster whose refcount (in the first refcount block) is set to 1 while nothing points to it.
 */
export function leakOneCluster(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    const header = Buffer.alloc(104);
    readSync(fd, header, 0, header.length, 0);
    const clusterSize = 1 << header.readUInt32BE(20);
    const refcountBits = 1 << (header.readUInt32BE(4) >= 3 ? header.readUInt32BE(96) : 4);
    if (refcountBits !== 16) throw new Error(`leakOneCluster handles 16-bit refcounts only, not ${refcountBits}`);
    const table = Buffer.alloc(8);
    readSync(fd, table, 0, 8, Number(header.readBigUInt64BE(48)));
    const block = Number(table.readBigUInt64BE(0));
    const index = Math.ceil(fstatSync(fd).size / clusterSize);
    if (index >= clusterSize / 2) throw new Error('the image is too large for its first refcount block to cover the new cluster');
    ftruncateSync(fd, (index + 1) * clusterSize);
    const one = Buffer.alloc(2);
    one.writeUInt16BE(1);
    writeSync(fd, one, 0, 2, block + index * 2);
  } finally {
    closeSync(fd);
  }
}

/**
 * A two-layer qcow2 chain showing the built content through its top (img.qcow2): the base (base.qcow2, named
 * relatively so the folder can be copied) has 40 MiB from the start of the data partition zeroed, and the top holds
 * exactly the clusters that differ. merge --external must copy them down. Where the disk reads zeros (16 MiB of
 * the largest hole of the built image), the base holds other data and the top zeros over it: 8 MiB as data, 8 MiB
 * as zero clusters, the two ways zeros reach a commit that must neither allocate them nor free a base cluster
 * while allocating (formats/qcow2/zero-clusters.ts).
 */
export async function chain(dir: string): Promise<BuiltImage> {
  const image = await standard('qcow2', dir);
  const base = join(dir, 'base.qcow2');
  const map = spawnSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', image.dataFile], { encoding: 'utf8' });
  const holes = (JSON.parse(map.stdout) as { start: number; length: number; data: boolean }[]).filter((e) => !e.data);
  const hole = holes.reduce((a, b) => (b.length > a.length ? b : a));
  const at = Math.ceil(hole.start / MiB) * MiB;
  if (at + 16 * MiB > hole.start + hole.length || at < 49 * MiB) throw new Error(`no 16 MiB hole past 49 MiB in ${image.dataFile}`);
  sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', image.dataFile, base]);
  sh('qemu-io', ['-f', 'qcow2', '-c', 'write -z 9M 40M', '-c', `write -P 0x5a ${at} 16M`, base]);
  sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'img.qcow2', 'top.qcow2'], dir);
  sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0 ${at} 8M`, '-c', `write -z ${at + 8 * MiB} 8M`, join(dir, 'top.qcow2')]);
  renameSync(join(dir, 'top.qcow2'), image.dataFile);
  return image;
}

interface Info {
  virtualSizeBytes: number;
  hostBytes: number;
  backing?: string;
  snapshots: number;
}

export function info(image: BuiltImage): Info {
  const fmt = image.format === 'qcow2' ? 'qcow2' : 'parallels';
  const result = spawnSync('qemu-img', ['info', '-U', '-f', fmt, '--output=json', image.dataFile], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`qemu-img info ${image.dataFile}: ${result.stderr}`);
  const json = JSON.parse(result.stdout) as { 'virtual-size': number; 'actual-size': number; 'backing-filename'?: string; snapshots?: unknown[] };
  return { virtualSizeBytes: json['virtual-size'], hostBytes: json['actual-size'], backing: json['backing-filename'], snapshots: json.snapshots?.length ?? 0 };
}

const MiB = 1024 * 1024;

/** Completed-state checks for CellSpec.after. */
export const completed = {
  size: (mib: number) => (image: BuiltImage) => {
    const size = info(image).virtualSizeBytes;
    return size === mib * MiB ? undefined : `virtual size ${size}, expected ${mib * MiB}`;
  },
  /** After --resize_partition the size is the requested one, or (shrink to an odd size) within 1 MiB of it. */
  near: (mib: number) => (image: BuiltImage) => {
    const size = info(image).virtualSizeBytes;
    return Math.abs(size - mib * MiB) < MiB ? undefined : `virtual size ${size}, expected about ${mib * MiB}`;
  },
  noSnapshots: (image: BuiltImage) => {
    const n = info(image).snapshots;
    return n === 0 ? undefined : `${n} internal snapshot(s) left`;
  },
  standalone: (image: BuiltImage) => {
    const backing = info(image).backing;
    return backing === undefined ? undefined : `still backed by ${backing}`;
  },
  plain: (image: BuiltImage) => {
    const i = info(image);
    return i.hostBytes >= i.virtualSizeBytes ? undefined : `occupies ${i.hostBytes} bytes on the host, less than its virtual size ${i.virtualSizeBytes}`;
  },
  expanding: (image: BuiltImage) => {
    const i = info(image);
    return i.hostBytes < i.virtualSizeBytes / 2 ? undefined : `occupies ${i.hostBytes} bytes on the host, not sparse (virtual ${i.virtualSizeBytes})`;
  },
  any: () => undefined,
};
