// The --info text forms, byte for byte: the original's labels (StringTable.cpp) and its numbers right-aligned in
// 15 columns (CommandVm.cpp: std::setw(15) in printSize, QString::arg(v, 15) in CompactInfo::execute).
import { describe, expect, it } from 'vitest';
import { renderText } from '../../src/cli/render.js';

describe('renderText', () => {
  it('resize --info', () => {
    const text = renderText({ kind: 'resize-info', sizeBytes: 1024 * 2 ** 20, minimumBytes: 140 * 2 ** 20 - 1, minimumKeepLastPartitionBytes: 2 ** 30, warnings: [] }, 'M');
    expect(text).toBe(
      'Disk information:\n' +
        '\tSize:\t\t\t\t\t\t           1024M\n' +
        '\tMinimum:\t\t\t\t\t            140M\n' +
        '\tMinimum without resizing the last partition:\t           1024M\n',
    );
  });

  it('compact --info: Block size in 512-byte sectors of a cluster, counts of clusters', () => {
    const text = renderText({ kind: 'compact-info', blockSizeBytes: 65536, totalBlocks: 16384, allocatedBlocks: 1696, usedBlocks: 1183, reclaimableBytes: 0, heldByLowerLayersBytes: 0, warnings: [] });
    expect(text).toBe(
      '        Block size:                   128\n' +
        '        Total blocks:               16384\n' +
        '        Allocated blocks:            1696\n' +
        '        Used blocks:                 1183\n',
    );
  });
});
