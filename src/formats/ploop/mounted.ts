// resize --info of a running container, read from what the kernel shows: the ploop device's size in sysfs and
// the statfs of its mounted filesystem. The delta is the kernel's; the guest filesystem is not parsed here at all.
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ToolError } from '../../util/errors.js';
import { MiB } from '../../util/units.js';
import { sysfsRoot } from './holders.js';

/** The original's allowance for ploop's own metadata in Minimum (CommandCt.cpp line 48, PLOOP_OVERHEAD_BLOCKS). */
const OVERHEAD_CLUSTERS = 4;

export interface MountedSizes {
  sizeBytes: number;
  minimumBytes: number;
  minimumKeepLastPartitionBytes: number;
  mountPoint: string;
}

/** /proc/self/mountinfo; PRL_DISK_TOOL_MOUNTINFO names a fake one, for tests only (beside PRL_DISK_TOOL_SYSFS). */
function mountinfoPath(): string {
  return process.env.PRL_DISK_TOOL_MOUNTINFO ?? '/proc/self/mountinfo';
}

function readSysfsNumber(path: string): number {
  const text = readFileSync(path, 'utf8').trim();
  if (!/^\d+$/.test(text)) throw new Error(`${path} holds "${text}", not a number`);
  return Number(text);
}

/** mountinfo escapes space, tab, newline and backslash in paths as octal (\040). */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The first mount of the whole filesystem (root "/") of the block device `majorMinor` ("182:1"). */
function mountPointOf(majorMinor: string): string | undefined {
  for (const line of readFileSync(mountinfoPath(), 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[2] === majorMinor && fields[3] === '/' && fields[4] !== undefined) return unescapeMountPath(fields[4]);
  }
  return undefined;
}

/** The size of a ploop device, as the kernel has it (what the original read from `ploop info -s`). */
export function deviceSizeBytes(device: string): number {
  return readSysfsNumber(join(sysfsRoot(), 'block', basename(device), 'size')) * 512;
}

/**
 * The original asked `ploop info` for the device size and `resize2fs -P` on the first partition (device + "p1")
 * for the filesystem's minimum, plus four ploop clusters (CommandCt.cpp Mounted::getResizeData, lines 172-184);
 * its Minimum without resizing the last partition was the current size (Command.h, ResizeData). We read the same
 * size from sysfs, and instead of running a C parser over the tenant's filesystem, take what statfs says is not
 * free: the partition less its free blocks. That counts the metadata of the current size, so it is at least
 * what resize2fs -P estimates: a shrink to it cannot cut data.
 */
export function mountedSizes(device: string, clusterBytes: number, hdd: string): MountedSizes {
  const name = basename(device);
  const block = join(sysfsRoot(), 'block', name);
  const sizeBytes = deviceSizeBytes(device);
  const partition = existsSync(join(block, `${name}p1`)) ? join(block, `${name}p1`) : block;
  const majorMinor = readFileSync(join(partition, 'dev'), 'utf8').trim();
  const mountPoint = mountPointOf(majorMinor);
  if (mountPoint === undefined) {
    throw new ToolError(
      'in-use',
      `The ploop image "${hdd}" is attached to the kernel as ${device}, but the filesystem of ${basename(partition)} is not mounted, so its use cannot be read; mount it (start the container) or stop the container, then try again. Nothing was changed.`,
    );
  }
  const stats = statfsSync(mountPoint, { bigint: true });
  const freeBytes = Number(stats.bfree * stats.bsize);
  const partitionBytes = readSysfsNumber(join(partition, 'size')) * 512;
  const needed = OVERHEAD_CLUSTERS * clusterBytes + Math.max(0, partitionBytes - freeBytes);
  return {
    sizeBytes,
    minimumBytes: Math.min(sizeBytes, Math.ceil(needed / MiB) * MiB),
    minimumKeepLastPartitionBytes: sizeBytes,
    mountPoint,
  };
}
