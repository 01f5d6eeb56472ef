// kill -9 of the tool, guestfish and the appliance's qemu at points spread over a measured run of every operation
// that runs the appliance, on qcow2; the recovery is the same command again; then check, fsck, checksums, no strays.
import { afterAll, describe, expect, it } from 'vitest';
import { runCell } from './cells.js';
import { applianceCells } from './appliance-cells.js';
import { Tally } from './summary.js';

const tally = new Tally('faults-appliance-qcow2');

afterAll(() => {
  tally.flush();
  expect(tally.lost).toBe(0);
});

describe('kill -9 with the appliance running, qcow2', () => {
  it.each(applianceCells('qcow2').map((cell) => [cell.operation, cell] as const))('%s: killed at points of a measured run, rerun, nothing lost', async (_name, cell) => {
    const { row, failures } = await runCell(cell, tally);
    expect(failures).toEqual([]);
    expect(row.lost).toBe(0);
  });
});
