// compact --info: the block counts and the reclaimable estimate, under a shared lock, never writing the image.
import type { CompactInfoReport } from '../report.js';
import type { Context } from '../context.js';
import { openImage } from '../open.js';
import { closePloopImage } from '../../formats/ploop/image.js';
import { estimateQcow2 } from './qcow2.js';
import { estimatePloop, openForCompact } from './ploop.js';
import type { BlockEstimate } from './discover.js';

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
    if (opened.ref.format === 'qcow2') {
      const image = opened.image;
      if (image.format !== 'qcow2') throw new Error('internal: a qcow2 reference loaded as ploop');
      return toReport(await estimateQcow2(image, context), []);
    }
    const notes: string[] = [];
    const image = openForCompact(opened.ref.folder, false, notes);
    try {
      return toReport(await estimatePloop(image, context), notes);
    } finally {
      closePloopImage(image);
    }
  } finally {
    opened.lock.release();
  }
}

export function capitalize(sentence: string): string {
  const text = sentence.charAt(0).toUpperCase() + sentence.slice(1);
  return text.endsWith('.') ? text : `${text}.`;
}
