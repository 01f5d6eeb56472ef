// Turns the all-zero data clusters of a qcow2 overlay into zero clusters before the overlay is committed, so that
// zeros the appliance wrote (resize2fs moving a never-written journal, ntfsresize moves) reach the base as zero
// writes that unmap instead of as data. Why here and not in the appliance: libguestfs 1.48's add-drive has no
// detect-zeroes option. Why not detect-zeroes on the commit's base: qemu-img commit (a mirror job) writes up to
// 1 MiB at a time, and detect-zeroes only sees a request that is zero as a whole; this scan works per cluster.
// qemu-img commit then copies a zero cluster as write-zeroes with MAY_UNMAP (mirror's MIRROR_METHOD_ZERO).
import { closeSync, openSync } from 'node:fs';
import { readFully } from '../../util/file-io.js';
import { run } from '../../util/exec.js';
import { throwIfCancelled } from '../../util/cancel.js';
import { ToolError } from '../../util/errors.js';
import { map } from './qemu-img.js';

export interface ZeroRun {
  offsetBytes: number;
  lengthBytes: number;
}

export interface ZeroScan {
  /** Bytes of data clusters the overlay itself holds (read by the scan). */
  dataBytes: number;
  /** Of those, the bytes that were all zeros and became zero clusters. */
  zeroBytes: number;
}

const READ_BYTES = 8 * 1024 * 1024;
/** qemu-io commands per run: a long argv is fine, but keep each run well below ARG_MAX. */
const COMMANDS_PER_RUN = 2000;

/** Runs of all-zero clusters among the data clusters of `path` itself (depth 0), read at their host offsets. */
export async function findZeroRuns(path: string, clusterBytes: number, onRead?: (bytes: number) => void): Promise<{ runs: ZeroRun[]; dataBytes: number }> {
  const extents = (await map(path, 'qcow2', false)).filter((e) => e.depth === 0 && e.data);
  const runs: ZeroRun[] = [];
  const zeros = Buffer.alloc(clusterBytes);
  let dataBytes = 0;
  const fd = openSync(path, 'r');
  try {
    for (const extent of extents) {
      if (extent.offset === undefined) throw new ToolError('tool-failed', `qemu-img map gives no host offset for the data at byte ${extent.start} of "${path}" (compressed?); the overlay cannot be scanned.`);
      if (extent.start % clusterBytes !== 0 || extent.length % clusterBytes !== 0) {
        throw new ToolError('tool-failed', `qemu-img map reports an extent of "${path}" that is not cluster-aligned (byte ${extent.start}, ${extent.length} bytes).`);
      }
      for (let at = 0; at < extent.length; at += READ_BYTES) {
        throwIfCancelled();
        const length = Math.min(READ_BYTES, extent.length - at);
        const data = readFully(fd, length, extent.offset + at);
        for (let c = 0; c < length; c += clusterBytes) {
          if (!data.subarray(c, c + clusterBytes).equals(zeros)) continue;
          const offsetBytes = extent.start + at + c;
          const last = runs[runs.length - 1];
          if (last && last.offsetBytes + last.lengthBytes === offsetBytes) last.lengthBytes += clusterBytes;
          else runs.push({ offsetBytes, lengthBytes: clusterBytes });
        }
        dataBytes += length;
        onRead?.(length);
      }
    }
  } finally {
    closeSync(fd);
  }
  return { runs, dataBytes };
}

/** Rewrites the runs as zero clusters (write-zeroes with unmap): the content read through `path` does not change. */
export async function writeZeroRuns(path: string, runs: readonly ZeroRun[]): Promise<void> {
  for (let i = 0; i < runs.length; i += COMMANDS_PER_RUN) {
    throwIfCancelled();
    const args = ['-f', 'qcow2'];
    for (const r of runs.slice(i, i + COMMANDS_PER_RUN)) args.push('-c', `write -q -z -u ${r.offsetBytes} ${r.lengthBytes}`);
    args.push('-c', 'flush', path);
    const { stdout, stderr } = await run('qemu-io', args, { timeoutMs: 30 * 60_000 });
    if (/failed|error/i.test(stdout + stderr)) throw new ToolError('tool-failed', `qemu-io could not write zero clusters into "${path}": ${(stdout + stderr).trim()}`);
  }
}

/** Scans `path`'s own data clusters and turns the all-zero ones into zero clusters. */
export async function zeroAllZeroClusters(path: string, clusterBytes: number, onRead?: (bytes: number) => void): Promise<ZeroScan> {
  const { runs, dataBytes } = await findZeroRuns(path, clusterBytes, onRead);
  await writeZeroRuns(path, runs);
  return { dataBytes, zeroBytes: runs.reduce((sum, r) => sum + r.lengthBytes, 0) };
}
