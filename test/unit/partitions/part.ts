// A partition entry for the table and no-cut tests: number, first and last sector, kind (a Linux type id).
import type { Partition } from '../../../src/partitions/table.js';

export const part = (number: number, startSector: number, endSector: number, kind: Partition['kind'] = 'primary'): Partition => ({
  number,
  startSector,
  endSector,
  kind,
  typeId: '83',
});
