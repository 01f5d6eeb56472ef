// Expanding ↔ preallocated, in place: allocate every cluster zero-filled, or release the all-zero
// clusters and compact. The descriptor's Storage/Preallocated records the mode (ploop lib/xml.c).
import { Refused } from '../../util/errors.js';
import { setPreallocated, writeDescriptor } from './descriptor.js';
import { clearInUse, markInUse, usedEndBytes } from './delta.js';
import { type PloopImage, layoutOf, requireRecovered } from './image.js';
import { clusterBytes } from './header.js';
import { type CompactPlan, executeCompact, findZeroClusters, planCompact } from './compact.js';
import { type DeltaLayout, allocateClusters } from './resize.js';

export type ConvertTarget = 'preallocated' | 'expanding';

export interface ConvertPlan {
  target: ConvertTarget;
  /** preallocated: clusters to allocate (slot runs), all zero-filled at the end of the file. */
  allocate: { fromIndex: number; toIndex: number; firstOffset: number }[];
  allocateBytes: number;
  /** expanding: the compaction that drops the all-zero clusters. */
  compact?: CompactPlan;
}


function refuseChain(image: PloopImage): void {
  if (image.deltas.length > 1) {
    throw new Refused(`The ploop image "${image.descriptor.folder}" has snapshots; merge them before converting, so that no snapshot data is hidden or duplicated.`);
  }
}

/** Plans the preallocation of every unallocated cluster of a single-delta image. */
export function planPreallocate(top: DeltaLayout): ConvertPlan {
  const cluster = clusterBytes(top.header);
  let fileEnd = usedEndBytes(top);
  const allocate: ConvertPlan['allocate'] = [];
  for (let i = 0; i < top.header.batEntries; ) {
    if (top.bat[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < top.header.batEntries && top.bat[j] === 0) j++;
    allocate.push({ fromIndex: i, toIndex: j, firstOffset: fileEnd });
    fileEnd += (j - i) * cluster;
    i = j;
  }
  return { target: 'preallocated', allocate, allocateBytes: allocate.reduce((s, r) => s + (r.toIndex - r.fromIndex) * cluster, 0) };
}

/** Reads the image (zero detection) and plans the conversion; changes nothing. */
export function planConvert(image: PloopImage, target: ConvertTarget, progress?: (doneBytes: number, totalBytes: number) => void): ConvertPlan {
  refuseChain(image);
  const top = layoutOf(image, 0);
  if (target === 'preallocated') return planPreallocate(top);
  const compact = planCompact(top, [], findZeroClusters(image, progress));
  return { target, allocate: [], allocateBytes: 0, compact };
}

export function describeConvertPlan(plan: ConvertPlan): string[] {
  if (plan.target === 'preallocated') {
    return [
      `Allocate ${plan.allocateBytes} bytes of zero-filled clusters in ${plan.allocate.length} runs.`,
      'Set Preallocated in DiskDescriptor.xml.',
    ];
  }
  return [
    'Remove Preallocated from DiskDescriptor.xml.',
    `Release ${plan.compact!.releasedClusters} all-zero clusters and compact the delta, freeing ${plan.compact!.reclaimedBytes} bytes.`,
  ];
}

export function executeConvert(image: PloopImage, plan: ConvertPlan, options: { progress?: (doneBytes: number, totalBytes: number) => void } = {}): void {
  refuseChain(image);
  requireRecovered(image);
  const delta = image.deltas[0]!;
  if (plan.target === 'preallocated') {
    markInUse(delta);
    let done = 0;
    for (const run of plan.allocate) {
      allocateClusters(delta, run.fromIndex, run.toIndex, run.firstOffset, (n) => {
        done += n;
        options.progress?.(done, plan.allocateBytes);
      });
    }
    clearInUse(delta);
    setPreallocated(image.descriptor, true);
    writeDescriptor(image.descriptor);
  } else {
    // The descriptor first: a power cut between the two leaves a valid expanding image with every cluster still
    // allocated (the next convert compacts it), never a Preallocated descriptor over released clusters.
    setPreallocated(image.descriptor, false);
    writeDescriptor(image.descriptor);
    executeCompact(image, plan.compact!, options);
  }
}
