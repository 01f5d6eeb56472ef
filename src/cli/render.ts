// Reports → the original's text forms, or one JSON object (sizes in bytes).
import type { Report } from '../commands/report.js';
import { toUnitCeil, type Unit } from '../util/units.js';

// Both --info forms right-align their numbers in 15 columns, as the original did (CommandVm.cpp: printSize's
// std::setw(15) for resize --info, QString::arg(v, 15) for compact --info).
const number15 = (value: number): string => String(value).padStart(15);

export function renderText(report: Report, units: Unit = 'M'): string {
  switch (report.kind) {
    case 'resize-info':
      return [
        'Disk information:',
        `\tSize:\t\t\t\t\t\t${number15(toUnitCeil(report.sizeBytes, units))}${units}`,
        `\tMinimum:\t\t\t\t\t${number15(toUnitCeil(report.minimumBytes, units))}${units}`,
        `\tMinimum without resizing the last partition:\t${number15(toUnitCeil(report.minimumKeepLastPartitionBytes, units))}${units}`,
        '',
      ].join('\n');
    case 'compact-info':
      // Block size is the image's cluster in 512-byte sectors, not the original's guest block size (docs/cli.md).
      return [
        `        Block size:       ${number15(report.blockSizeBytes / 512)}`,
        `        Total blocks:     ${number15(report.totalBlocks)}`,
        `        Allocated blocks: ${number15(report.allocatedBlocks)}`,
        `        Used blocks:      ${number15(report.usedBlocks)}`,
        '',
      ].join('\n');
    case 'change': {
      const lines = report.dryRun ? ['Dry run: nothing was changed. The plan:', ...report.plan] : report.messages;
      return lines.length > 0 ? lines.join('\n') + '\n' : '';
    }
  }
}

export function renderJson(report: Report): string {
  switch (report.kind) {
    case 'resize-info':
      return JSON.stringify({
        size: report.sizeBytes,
        minimum: report.minimumBytes,
        minimumKeepLastPartition: report.minimumKeepLastPartitionBytes,
        warnings: report.warnings,
      });
    case 'compact-info':
      return JSON.stringify({
        blockSize: report.blockSizeBytes,
        totalBlocks: report.totalBlocks,
        allocatedBlocks: report.allocatedBlocks,
        usedBlocks: report.usedBlocks,
        reclaimableBytes: report.reclaimableBytes,
        heldByLowerLayersBytes: report.heldByLowerLayersBytes,
        warnings: report.warnings,
      });
    case 'change':
      return JSON.stringify({
        operation: report.operation,
        dryRun: report.dryRun,
        unchanged: report.unchanged,
        plan: report.plan,
        messages: report.messages,
        ...report.facts,
        warnings: report.warnings,
      });
  }
}
