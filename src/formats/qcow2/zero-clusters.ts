// Zeros that must not become data. Before a commit, the all-zero data clusters of the layers being committed
// become zero clusters (zeros the appliance wrote: resize2fs moving a never-written journal, ntfsresize moves;
// zeros a VM wrote into an external snapshot), and the target's clusters under zero clusters are freed in a run
// of their own (clearUnderZeroClusters says why). Why a scan and not detect-zeroes: libguestfs 1.48's add-drive
// has no detect-zeroes option, and qemu-img commit (a mirror job) writes up to 1 MiB at a time while detect-zeroes
// only sees a request that is zero as a whole; this scan works per cluster. qemu-img commit then copies a zero
// cluster as a write-zeroes (mirror's MIRROR_METHOD_ZERO), which over a freed cluster only sets a zero flag.
import { closeSync, openSync } from 'node:fs';
import { readFully } from '../../util/file-io.js';
import { throwIfCancelled } from '../../util/cancel.js';
import { ToolError } from '../../util/errors.js';
import { infoChain, map } from './qemu-img.js';
import { discardGuestRanges, runQemuIoBatches } from './qemu-io.js';
import type { Range } from '../../util/ranges.js';

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
  await runQemuIoBatches(path, 'qcow2', runs.map((r) => `write -q -z -u ${r.offsetBytes} ${r.lengthBytes}`), { what: 'write zero clusters into' });
}

/** Scans `path`'s own data clusters and turns the all-zero ones into zero clusters. */
export async function zeroAllZeroClusters(path: string, clusterBytes: number, onRead?: (bytes: number) => void): Promise<ZeroScan> {
  const { runs, dataBytes } = await findZeroRuns(path, clusterBytes, onRead);
  await writeZeroRuns(path, runs);
  return { dataBytes, zeroBytes: runs.reduce((sum, r) => sum + r.lengthBytes, 0) };
}

/**
 * Frees, in the qcow2 file `base`, the clusters under the zero clusters of the `overlays` layers above
 * it in `top`'s chain, before those layers are committed into it. qemu-img commit copies a zero cluster as a
 * write-zeroes that may unmap; over a cluster the base holds, that frees it, and the same commit may then reuse
 * it for other data before the table that still names it reaches the disk: a kill or a power cut there leaves one
 * cluster under two guest offsets. Freed here first, in a run that allocates nothing (a discard: the ranges read
 * as zeros, over a backing file too), the commit's zero writes only set zero flags. The overlays shadow these
 * ranges: what the top shows does not change.
 */
export async function clearUnderZeroClusters(top: string, overlays: number, base: string): Promise<void> {
  // Past the end of a smaller base (which the commit grows) there is nothing to free.
  const baseBytes = (await infoChain(base, 'qcow2', false))[0]!.virtualSize;
  const ranges: Range[] = (await map(top, 'qcow2', false))
    .filter((e) => e.depth < overlays && e.zero && !e.data && e.start < baseBytes)
    .map((e) => ({ start: e.start, length: Math.min(e.start + e.length, baseBytes) - e.start }))
    .filter((r) => r.length > 0);
  await discardGuestRanges(base, 'qcow2', ranges);
}

/** Bytes per qemu-io write when zeros are written as data: qemu-io holds the whole buffer of one write in memory. */
const ZERO_DATA_WRITE_BYTES = 64 * 1024 * 1024;
/** Bytes of zeros per qemu-io run: each run is waited for after an interruption (untorn), so it stays short. */
const ZERO_DATA_RUN_BYTES = 1024 * 1024 * 1024;

/**
 * Writes zeros as data over every range of the standalone image `path` that holds no data (zero clusters, or
 * nothing): a plain image whose commit left zero clusters is laid out as a preallocated one again. The run only
 * allocates, and qcow2 hands out the lowest free cluster first, which is where clearUnderZeroClusters freed: the
 * host offsets keep rising with the guest offsets.
 */
export async function writeZerosAsData(path: string): Promise<void> {
  const holes = (await map(path, 'qcow2', false)).filter((e) => e.depth === 0 && !e.data && e.length > 0);
  const commands: string[] = [];
  for (const hole of holes) {
    for (let at = 0; at < hole.length; at += ZERO_DATA_WRITE_BYTES) {
      commands.push(`write -q -P 0 ${hole.start + at} ${Math.min(ZERO_DATA_WRITE_BYTES, hole.length - at)}`);
    }
  }
  await runQemuIoBatches(path, 'qcow2', commands, { what: 'write zeros as data into', commandsPerRun: ZERO_DATA_RUN_BYTES / ZERO_DATA_WRITE_BYTES });
}
