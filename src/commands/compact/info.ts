// compact --info: the block counts and the reclaimable estimate, under a shared lock, never writing the image.
import type { CompactInfoReport } from '../report.js';
import type { Context } from '../context.js';
import { openImage } from '../open.js';
import { estimateQcow2 } from './qcow2.js';
import { estimatePloop, recoveredForCompact } from './ploop.js';
import type { BlockEstimate } from './discover.js';
import { hostPloopArgv } from '../../formats/ploop/host-ploop.js';
import { quoteArgv } from '../../util/exec.js';

function toReport(estimate: BlockEstimate, notes: string[]): CompactInfoReport {
  return {
    kind: 'compact-info',
    blockSizeBytes: estimate.clusterBytes,
    totalBlocks: estimate.totalBlocks,
    allocatedBlocks: estimate.allocatedBlocks,
    usedBlocks: estimate.usedBlocks,
    reclaimableBytes: estimate.reclaimableBytes,
    heldByLowerLayersBytes: estimate.heldByLowerLayersBytes,
    warnings: [...notes, ...estimate.warnings, ...estimate.session.skipped.map(capitalize)],
  };
}

export async function compactInfo(hdd: string, context: Context): Promise<CompactInfoReport> {
  const opened = await openImage(hdd, 'query', context.notice);
  try {
    const image = opened.image;
    if (image.format === 'qcow2') return toReport(await estimateQcow2(image, context), []);
    const notes: string[] = [];
    // What compact would do first must be what it does: a running container's in-use mark is the kernel's, and
    // compact hands that image to the host's ploop; an image another process writes, compact refuses.
    if (opened.holder === 'kernel') notes.push(`The container is running: compact hands it to the host's ploop (${quoteArgv(hostPloopArgv({ kind: 'compact' }, image.handle.descriptor.path))}), which works online, so what it frees may differ from these numbers.`);
    else if (opened.holder === 'process') notes.push('Compact refuses the image while that process holds it.');
    else recoveredForCompact(image.handle, false, notes);
    return toReport(await estimatePloop(image.handle, context), notes);
  } finally {
    opened.lock.release();
  }
}

export function capitalize(sentence: string): string {
  const text = sentence.charAt(0).toUpperCase() + sentence.slice(1);
  return text.endsWith('.') ? text : `${text}.`;
}
