// Grow and shrink of the top delta, offline: a pure planner (what moves where) and an executor that
// walks the same steps with the in-use protocol and data → fsync → BAT → fsync ordering.
import { Refused } from '../../util/errors.js';
import { throwIfCancelled } from '../../util/cancel.js';
import { entryToOffset, offsetToEntry } from './bat.js';
import { extensionActive } from './check.js';
import {
  HEADER_BYTES,
  clusterBytes,
  cylindersFor,
  dataOffsetBytes,
  effectiveSizeSectors,
  formatVersion,
} from './header.js';
import {
  type Delta,
  type DeltaLayout,
  clearInUse,
  markInUse,
  syncData,
  truncateDelta,
  usedEndBytes,
  writeData,
  writeEntries,
  writeEntry,
  writeHeader,
  zeroEntries,
} from './delta.js';
import { readFully } from '../../util/file-io.js';
import { type PloopImage, requireRecovered } from './image.js';
import { setDiskSize, writeDescriptor } from './descriptor.js';

export type { DeltaLayout };

export type ResizeStep =
  | { kind: 'mark-in-use'; dropsExtension: boolean }
  | { kind: 'move-cluster'; virtualIndex: number; fromOffset: number; toOffset: number }
  | { kind: 'zero-range'; offsetBytes: number; lengthBytes: number }
  | { kind: 'write-header'; sizeSectors: number; batEntries: number; dataOffsetSectors: number }
  | { kind: 'release-clusters'; fromIndex: number; toIndex: number; allocated: number }
  | { kind: 'allocate-clusters'; fromIndex: number; toIndex: number; firstOffset: number }
  | { kind: 'truncate'; sizeBytes: number }
  | { kind: 'clear-in-use' }
  | { kind: 'update-descriptor'; diskSizeSectors: number };

export interface ResizePlan {
  oldSizeBytes: number;
  newSizeBytes: number;
  steps: ResizeStep[];
  /** Host bytes the file grows (positive) or shrinks by, as planned. */
  fileDeltaBytes: number;
}

const usedEnd = usedEndBytes;

/**
 * Plans a resize of the top delta to `newSizeBytes` (a multiple of 512). `lower` are the snapshot
 * deltas below it: a shrink that would leave their data past the new end is refused, since a later
 * grow would bring that old data back into view.
 */
export function planResize(top: DeltaLayout, lower: readonly DeltaLayout[], newSizeBytes: number, options: { preallocated?: boolean } = {}): ResizePlan {
  const header = top.header;
  const version = formatVersion(header);
  const cluster = clusterBytes(header);
  const oldSectors = effectiveSizeSectors(header);
  if (newSizeBytes <= 0 || newSizeBytes % 512 !== 0) throw new Refused(`The new size must be a positive multiple of 512 bytes, not ${newSizeBytes}.`);
  const newSectors = newSizeBytes / 512;
  if (version === 1 && newSectors >= 2 ** 32) {
    throw new Refused('This ploop delta uses the old "WithoutFreeSpace" format, which cannot exceed 2 TiB; keep the size below 2T.');
  }
  const oldEntries = header.batEntries;
  const newEntries = Math.ceil(newSectors / header.clusterSectors);
  if (newEntries > 0xffffffff) throw new Refused('The new size needs more than 2^32 clusters; choose a smaller size.');
  const steps: ResizeStep[] = [{ kind: 'mark-in-use', dropsExtension: extensionActive(header) }];
  const oldFileEnd = usedEnd(top);
  let fileEnd = oldFileEnd;

  if (newSectors >= oldSectors) {
    if (oldSectors % header.clusterSectors !== 0 && oldEntries > 0) {
      const last = oldEntries - 1;
      const tailStart = (oldSectors % header.clusterSectors) * 512;
      if (top.bat[last] !== 0) {
        // Bytes past the old end inside the last cluster were never visible; make sure they read as zeros.
        steps.push({ kind: 'zero-range', offsetBytes: entryToOffset(header, top.bat[last]!) + tailStart, lengthBytes: cluster - tailStart });
      } else if (lower.some((l) => last < l.header.batEntries && l.bat[last] !== 0)) {
        throw new Refused('The last cluster of this disk lies in a snapshot delta and its end is not cluster-aligned; merge the snapshots before growing.');
      }
    }
    const oldDataStart = dataOffsetBytes(header);
    const tableEnd = HEADER_BYTES + 4 * newEntries;
    let newDataStart = oldDataStart;
    if (tableEnd > oldDataStart) {
      newDataStart = oldDataStart + Math.ceil((tableEnd - oldDataStart) / cluster) * cluster;
      fileEnd = Math.max(fileEnd, newDataStart);
      // Clusters in the way of the longer BAT go to the end of the file, lowest first.
      for (let i = 0; i < oldEntries; i++) {
        const entry = top.bat[i]!;
        if (entry === 0) continue;
        const from = entryToOffset(header, entry);
        if (from >= newDataStart) continue;
        steps.push({ kind: 'move-cluster', virtualIndex: i, fromOffset: from, toOffset: fileEnd });
        fileEnd += cluster;
      }
      steps.push({ kind: 'zero-range', offsetBytes: oldDataStart, lengthBytes: newDataStart - oldDataStart });
    }
    if (version === 1 && fileEnd / 512 >= 2 ** 32) throw new Refused('The grown delta would pass 2 TiB, the limit of the old "WithoutFreeSpace" format.');
    steps.push({ kind: 'write-header', sizeSectors: newSectors, batEntries: newEntries, dataOffsetSectors: newDataStart / 512 });
    if (options.preallocated && newEntries > oldEntries) {
      steps.push({ kind: 'allocate-clusters', fromIndex: oldEntries, toIndex: newEntries, firstOffset: fileEnd });
      fileEnd += (newEntries - oldEntries) * cluster;
    }
  } else {
    for (const l of lower) {
      for (let i = newEntries; i < l.header.batEntries; i++) {
        if (l.bat[i] !== 0) {
          throw new Refused('A snapshot delta below the top holds data past the new end; merge the snapshots before shrinking.');
        }
      }
    }
    steps.push({ kind: 'write-header', sizeSectors: newSectors, batEntries: newEntries, dataOffsetSectors: dataOffsetBytes(header) / 512 });
    let allocated = 0;
    for (let i = newEntries; i < oldEntries; i++) if (top.bat[i] !== 0) allocated++;
    // After the header write these slots are slack; zeroing them is the release.
    steps.push({ kind: 'release-clusters', fromIndex: newEntries, toIndex: oldEntries, allocated });
    const kept: DeltaLayout = { header: { ...header, batEntries: newEntries }, bat: top.bat.slice(0, newEntries), fileSizeBytes: top.fileSizeBytes };
    fileEnd = usedEnd(kept);
  }
  if (fileEnd < top.fileSizeBytes) steps.push({ kind: 'truncate', sizeBytes: fileEnd });
  steps.push({ kind: 'clear-in-use' }, { kind: 'update-descriptor', diskSizeSectors: newSectors });
  return { oldSizeBytes: oldSectors * 512, newSizeBytes, steps, fileDeltaBytes: fileEnd - top.fileSizeBytes };
}

export function describeResizeStep(step: ResizeStep): string {
  switch (step.kind) {
    case 'mark-in-use':
      return step.dropsExtension ? 'Mark the top delta in use and drop its format extension (a dirty bitmap that the change makes stale).' : 'Mark the top delta in use.';
    case 'move-cluster':
      return `Move virtual cluster ${step.virtualIndex} from byte ${step.fromOffset} to byte ${step.toOffset}, out of the way of the longer BAT.`;
    case 'zero-range':
      return `Zero ${step.lengthBytes} bytes at byte ${step.offsetBytes}.`;
    case 'write-header':
      return `Write the new header: ${step.sizeSectors} sectors, ${step.batEntries} BAT entries, data from sector ${step.dataOffsetSectors}.`;
    case 'release-clusters':
      return `Release BAT slots ${step.fromIndex} to ${step.toIndex - 1} past the new end (${step.allocated} allocated).`;
    case 'allocate-clusters':
      return `Allocate zero-filled clusters for slots ${step.fromIndex} to ${step.toIndex - 1} (preallocated image).`;
    case 'truncate':
      return `Truncate the delta file to ${step.sizeBytes} bytes.`;
    case 'clear-in-use':
      return 'Clear the in-use mark.';
    case 'update-descriptor':
      return `Set Disk_size and End in DiskDescriptor.xml to ${step.diskSizeSectors} sectors.`;
  }
}

export interface ExecuteOptions {
  progress?: (doneBytes: number, totalBytes: number) => void;
}

/** Copies one cluster, fsyncs, then points the BAT slot at the copy and fsyncs (ploop1_image.h rule 4). */
export function moveCluster(delta: Delta, virtualIndex: number, fromOffset: number, toOffset: number): void {
  const data = readFully(delta.fd, clusterBytes(delta.header), fromOffset);
  writeData(delta, data, toOffset);
  syncData(delta, `cluster ${virtualIndex} copied to byte ${toOffset}`);
  writeEntry(delta, virtualIndex, offsetToEntry(delta.header, toOffset));
}

export function zeroRange(delta: Delta, offsetBytes: number, lengthBytes: number): void {
  const chunk = Math.min(lengthBytes, 8 * 1024 * 1024);
  const zeros = Buffer.alloc(chunk);
  for (let done = 0; done < lengthBytes; done += chunk) {
    writeData(delta, zeros.subarray(0, Math.min(chunk, lengthBytes - done)), offsetBytes + done);
  }
  syncData(delta, `${lengthBytes} bytes zeroed at ${offsetBytes}`);
}

/** Bytes of data a step reads or writes, for progress. */
function workBytes(step: ResizeStep, cluster: number): number {
  if (step.kind === 'move-cluster') return cluster;
  if (step.kind === 'zero-range') return step.lengthBytes;
  if (step.kind === 'allocate-clusters') return (step.toIndex - step.fromIndex) * cluster;
  return 0;
}

/** Writes zero-filled clusters in batches: data, fsync, then the batch's BAT entries, fsync. */
export function allocateClusters(delta: Delta, fromIndex: number, toIndex: number, firstOffset: number, onBytes: (n: number) => void): void {
  const cluster = clusterBytes(delta.header);
  const batch = Math.max(1, Math.floor((64 * 1024 * 1024) / cluster));
  const zeros = Buffer.alloc(cluster);
  for (let start = fromIndex; start < toIndex; start += batch) {
    throwIfCancelled();
    const end = Math.min(toIndex, start + batch);
    const entries: number[] = [];
    for (let i = start; i < end; i++) {
      const at = firstOffset + (i - fromIndex) * cluster;
      writeData(delta, zeros, at);
      entries.push(offsetToEntry(delta.header, at));
    }
    syncData(delta, `zero clusters for slots ${start}..${end - 1} written`);
    writeEntries(delta, start, entries);
    onBytes((end - start) * cluster);
  }
}

/** Runs a plan on an image opened with { write: true } (after recoverPloopImage when it was needed). */
export function executeResize(image: PloopImage, plan: ResizePlan, options: ExecuteOptions = {}): void {
  requireRecovered(image);
  const delta = image.deltas[0]!;
  const cluster = clusterBytes(delta.header);
  const total = plan.steps.reduce((sum, step) => sum + workBytes(step, cluster), 0);
  let done = 0;
  const advance = (n: number): void => {
    done += n;
    options.progress?.(done, total);
  };
  for (const step of plan.steps) {
    throwIfCancelled();
    switch (step.kind) {
      case 'mark-in-use':
        markInUse(delta);
        break;
      case 'move-cluster':
        moveCluster(delta, step.virtualIndex, step.fromOffset, step.toOffset);
        advance(cluster);
        break;
      case 'zero-range':
        zeroRange(delta, step.offsetBytes, step.lengthBytes);
        advance(step.lengthBytes);
        break;
      case 'write-header':
        writeHeader(delta, {
          ...delta.header,
          sizeSectors: step.sizeSectors,
          batEntries: step.batEntries,
          dataOffsetSectors: step.dataOffsetSectors,
          cylinders: cylindersFor(step.sizeSectors, delta.header.heads),
        });
        break;
      case 'release-clusters':
        zeroEntries(delta, step.fromIndex, step.toIndex);
        break;
      case 'allocate-clusters':
        allocateClusters(delta, step.fromIndex, step.toIndex, step.firstOffset, advance);
        break;
      case 'truncate':
        truncateDelta(delta, step.sizeBytes);
        break;
      case 'clear-in-use':
        clearInUse(delta);
        break;
      case 'update-descriptor':
        setDiskSize(image.descriptor, step.diskSizeSectors);
        writeDescriptor(image.descriptor);
        image.sizeBytes = step.diskSizeSectors * 512;
        break;
    }
  }
}
