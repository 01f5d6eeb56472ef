// The resize planner, table-driven on a real sfdisk-made GPT: which steps, in which order, with which geometry,
// and which requests are refused while planning.
import { afterAll, describe, expect, it } from 'vitest';
import { planResize } from '../../src/commands/resize/plan.js';
import type { DiskFacts } from '../../src/commands/resize/facts.js';
import { cleanup } from './partitions/disk-fixture.js';
import { planFacts } from './plan-fixture.js';

afterAll(cleanup);
const MiB = 1024 * 1024;

const GPT = `label: gpt
start=2048, size=16384, type=21686148-6449-6E6F-744E-656564454649
start=18432, size=241664, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
`;

async function facts(content: string | undefined, contentBytes = 241664 * 512): Promise<DiskFacts> {
  return planFacts(GPT, 128, content ? { type: content as 'ext4', sizeBytes: contentBytes } : undefined);
}

const kinds = (plan: { steps: readonly { kind: string }[] }): string[] => plan.steps.map((s) => s.kind);
const limits = (minimumBytes: number) => ({ minimumBytes, minimumKeepLastPartitionBytes: 128 * MiB, contentMinimumBytes: minimumBytes - 10 * MiB, warnings: [] });

describe('planResize', () => {
  it.each([
    ['plain grow', undefined, 256, false, ['grow-image', 'write-table']],
    ['plain same size', 'ext4', 128, false, []],
    ['grow with the partition', 'ext4', 256, true, ['grow-image', 'begin-overlay', 'write-table', 'grow-content', 'commit-overlay']],
    ['grow swap natively', 'swap', 256, true, ['grow-image', 'begin-overlay', 'write-table', 'resize-swap', 'commit-overlay']],
    ['grow unknown content: the partition only', undefined, 256, true, ['grow-image', 'begin-overlay', 'write-table', 'commit-overlay']],
  ] as const)('%s', async (_title, content, sizeMiB, resizePartition, expected) => {
    const plan = planResize(await facts(content), sizeMiB * MiB, { resizePartition });
    expect(kinds(plan)).toEqual(expected);
  });

  it('moves the last partition to the last usable sector of the new disk', async () => {
    const plan = planResize(await facts('ext4'), 256 * MiB, { resizePartition: true });
    expect(plan.steps.find((s) => s.kind === 'write-table')).toMatchObject({ partition: 2, fromEndSector: 260095, toEndSector: 256 * 2048 - 34 });
  });

  it('shrinks content first, then the table, then the image', async () => {
    const plan = planResize(await facts('ext4'), 64 * MiB, { resizePartition: true, limits: limits(60 * MiB) });
    expect(kinds(plan)).toEqual(['begin-overlay', 'shrink-content', 'write-table', 'commit-overlay', 'shrink-image']);
    const shrink = plan.steps.find((s) => s.kind === 'shrink-content');
    expect(shrink).toMatchObject({ toBytes: (64 * 2048 - 34 - 18432 + 1) * 512 - (((64 * 2048 - 34 - 18432 + 1) * 512) % 4096) });
  });

  it.each([
    ['plain shrink into the partition', 'ext4', 64, false, undefined, /never cuts data\. The smallest size it accepts is 128M/],
    ['below Minimum', 'ext4', 64, true, limits(80 * MiB), /the minimum is 80M \(resize --info\).*Free at least 16 MiB/],
    ['unmeasured shrink', 'ext4', 64, true, undefined, /Cannot shrink an ext4 filesystem/],
    ['xfs shrink', 'xfs', 64, true, undefined, /xfs filesystem, which cannot shrink .*grow the disk instead/],
    ['unknown content cut', undefined, 64, true, undefined, /does not recognise, so it cannot be shrunk safely/],
  ] as const)('refuses %s', async (_title, content, sizeMiB, resizePartition, given, message) => {
    const f = await facts(content);
    expect(() => planResize(f, sizeMiB * MiB, given ? { resizePartition, limits: given } : { resizePartition })).toThrow(message);
  });
});
