// The no-cut rule, table-driven: which allocated bytes a structure proves free, the smallest safe size, the numbers
// resize --info derives from it, the planner's refusals, qemu-img map's preallocation layout and the ploop BATs.
import { afterAll, describe, expect, it } from 'vitest';
import { assertCutIsFree, dataEndBytes, formatExactSize, proofOf, type Proof } from '../../src/commands/resize/minimum.js';
import { planResize } from '../../src/commands/resize/plan.js';
import { sizeLimits } from '../../src/commands/resize/info.js';
import { rollbackFailedMessage } from '../../src/commands/resize/resize.js';
import type { DiskFacts } from '../../src/commands/resize/facts.js';
import { dataExtents, isPreallocatedLayout } from '../../src/formats/qcow2/allocation.js';
import type { MapExtent } from '../../src/formats/qcow2/qemu-img.js';
import { allocatedRanges } from '../../src/formats/ploop/allocation.js';
import type { PloopImage } from '../../src/formats/ploop/image.js';
import { filesystemFor } from '../../src/fs/registry.js';
import { readTable } from '../../src/partitions/table.js';
import { cleanup, fileSource, makeDisk } from './partitions/disk-fixture.js';

afterAll(cleanup);
const K = 1024;
const M = 1024 * K;
const r = (start: number, end: number) => ({ start, length: end - start });

describe('dataEndBytes', () => {
  const nothing: Proof = { kind: 'nothing' };
  const fs32: Proof = { kind: 'filesystem', endBytes: 32 * M };
  const table: Proof = { kind: 'table', holds: [r(0, 512), r(M, 20 * M)] };
  it.each([
    ['nothing allocated', [], nothing, 0],
    ['unknown data at 40M', [r(40 * M, 41 * M)], nothing, 41 * M],
    ['unknown data at several offsets', [r(0, 64 * K), r(10 * M, 11 * M), r(40 * M + 192 * K, 40 * M + 256 * K)], nothing, 40 * M + 256 * K],
    ['a partial sector rounds up', [r(0, 100)], nothing, 512],
    ['past a filesystem: free', [r(0, M), r(40 * M, 41 * M)], fs32, M],
    ['across a filesystem end: kept up to it', [r(31 * M, 33 * M)], fs32, 32 * M],
    ['outside every partition: free', [r(40 * M, 41 * M)], table, 0],
    ['the MBR sector is kept', [r(0, 64 * K), r(40 * M, 41 * M)], table, 512],
    ['inside a partition: kept', [r(15 * M, 25 * M)], table, 20 * M],
  ] as const)('%s', (_title, allocated, proof, expected) => {
    expect(dataEndBytes(allocated, proof)).toBe(expected);
  });
});

describe('proofOf a GPT', () => {
  const GPT = 'label: gpt\nstart=2048, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n';
  it('keeps the backup at the cut, not while planning (the plan rewrites it at the new end)', async () => {
    const table = await readTable(fileSource(makeDisk('proof-gpt.raw', 64, GPT)));
    const backup = [r(64 * M - 33 * 512, 64 * M)];
    expect(dataEndBytes(backup, proofOf(table, undefined, 'rewritten'))).toBe(0);
    expect(dataEndBytes(backup, proofOf(table, undefined, 'as-is'))).toBe(64 * M);
    expect(dataEndBytes([r(0, 64 * M)], proofOf(table, undefined, 'rewritten'))).toBe((2048 + 16384) * 512);
  });
});

describe('assertCutIsFree and the sizes it names', () => {
  it.each([
    [41 * M, '41M'],
    [40 * M + 256 * K, '41216K'],
    [2048 * M, '2G'],
    [M + 1, '1025K'],
  ] as const)('%i bytes is %s', (bytes, text) => expect(formatExactSize(bytes)).toBe(text));
  it('accepts exactly the data end and refuses one sector below it, naming the size', () => {
    expect(() => assertCutIsFree(40 * M + 256 * K, 40 * M + 256 * K, 'a.qcow2')).not.toThrow();
    expect(() => assertCutIsFree(40 * M + 255.5 * K, 40 * M + 256 * K, 'a.qcow2')).toThrow(/The smallest safe size is 41216K \(resize --info rounds it up to 41M\)/);
  });
});

function noTable(allocated: { start: number; length: number }[], content?: { type: string; sizeBytes: number }): DiskFacts {
  const facts = {
    image: { format: 'qcow2', path: 'a.qcow2' },
    disk: { path: 'a.qcow2', format: 'qcow2' },
    sizeBytes: 64 * M,
    table: { kind: 'none', diskSectors: 64 * 2048 },
    containerStartBytes: 0,
    containerBytes: 64 * M,
    guestDevice: '/dev/sda',
    head: Buffer.alloc(4096),
    plain: false,
    allocated,
  } as unknown as DiskFacts;
  if (content) facts.content = { fs: filesystemFor(content.type), probe: { type: content.type as 'ext4', sizeBytes: content.sizeBytes } };
  return facts;
}

describe('planResize and sizeLimits without a table', () => {
  const scattered = [r(0, 64 * K), r(10 * M, 10 * M + 64 * K), r(40 * M + 192 * K, 40 * M + 256 * K)];
  it.each([
    ['below the data', scattered, 40 * M, false, /holds data up to 40\.3 MiB .* smallest size it accepts is 41216K/],
    ['below the data, with --resize_partition', scattered, 40 * M, true, /holds data up to 40\.3 MiB .* smallest size it accepts is 41216K/],
    ['one sector below the smallest size', scattered, 40 * M + 255.5 * K, false, /smallest size it accepts is 41216K/],
    ['a blank head does not make the data blank', [r(40 * M, 41 * M)], 32 * M, true, /smallest size it accepts is 41M;/],
  ] as const)('refuses a shrink %s', (_title, allocated, target, resizePartition, message) => {
    expect(() => planResize(noTable([...allocated]), target, { resizePartition })).toThrow(message);
  });

  it.each([
    ['exactly the smallest size', scattered, 40 * M + 256 * K, false],
    ['exactly the smallest size, with --resize_partition', scattered, 40 * M + 256 * K, true],
    ['a blank disk', [], M, true],
  ] as const)('shrinks to %s', (_title, allocated, target, resizePartition) => {
    expect(planResize(noTable([...allocated]), target, { resizePartition }).steps.map((s) => s.kind)).toEqual(['shrink-image']);
  });

  it('a filesystem proves what lies past its end free', () => {
    const facts = noTable([r(0, M), r(40 * M, 41 * M)], { type: 'xfs', sizeBytes: 32 * M });
    expect(planResize(facts, 32 * M, { resizePartition: false }).steps.map((s) => s.kind)).toEqual(['shrink-image']);
  });

  it.each([
    ['unknown content', [r(40 * M, 41 * M)], undefined, { unsupported: 'x' }, 41 * M, 41 * M],
    ['a blank head over data', [r(40 * M, 40 * M + 64 * K)], undefined, { minimumBytes: 0, warnings: [] }, 41 * M, 41 * M],
    ['a blank disk', [], undefined, { minimumBytes: 0, warnings: [] }, M, M],
    ['ext4 with data past its end', [r(0, M), r(40 * M, 41 * M)], { type: 'ext4', sizeBytes: 32 * M }, { minimumBytes: 10 * M, warnings: [] }, 10 * M, 32 * M],
  ] as const)('resize --info: %s', (_title, allocated, content, measured, minimum, keep) => {
    const limits = sizeLimits(noTable([...allocated], content), 'unsupported' in measured ? measured : { ...measured, warnings: [] });
    expect([limits.minimumBytes, limits.minimumKeepLastPartitionBytes]).toEqual([minimum, keep]);
  });
});

describe('qemu-img map: data and preallocation (outputs captured from qemu-img 7.2)', () => {
  const e = (start: number, length: number, data: boolean, zero: boolean, offset?: number, depth = 0): MapExtent =>
    offset === undefined ? { start, length, data, zero, depth } : { start, length, data, zero, depth, offset };
  it.each([
    ['preallocation=off', [e(0, 4 * M, false, true)], false],
    ['preallocation=metadata (host holes)', [e(0, 4 * M, true, true, 327680)], false],
    ['preallocation=falloc or full', [e(0, 4 * M, true, false, 327680)], true],
    ['falloc, then grown with --preallocation=falloc', [e(0, 1536 * M, true, false, 327680), e(1536 * M, 1536 * M, true, false, 1611268096)], true],
    ['full sparse, written back to front', [e(0, 2 * M, true, false, 2424832), e(2 * M, 2 * M, true, false, 327680)], false],
    ['a zero cluster inside', [e(0, M, true, false, 327680), e(M, M, true, true, 1376256), e(2 * M, 2 * M, true, false, 2424832)], false],
    ['data from a backing file', [e(0, 4 * M, true, false, 327680, 1)], false],
    ['not covering the disk', [e(0, 2 * M, true, false, 327680)], false],
  ] as const)('%s', (_title, extents, preallocated) => {
    const virtualSize = Math.max(4 * M, ...extents.map((x) => x.start + x.length));
    expect(isPreallocatedLayout(extents, virtualSize)).toBe(preallocated);
  });
  it('data is what some layer holds and does not read as zero', () => {
    const extents = [e(0, M, true, false, 1), e(M, M, true, true, 2), e(2 * M, M, false, true), e(3 * M, M, true, false, 9, 1)];
    expect(dataExtents(extents)).toEqual([r(0, M), r(3 * M, 4 * M)]);
  });
});

describe('ploop allocation', () => {
  it('joins the BATs of every delta, clipped to the virtual size', () => {
    const delta = (entries: number[]) => ({ header: { batEntries: entries.length }, bat: Uint32Array.from(entries) });
    const image = { clusterBytes: M, sizeBytes: 5 * M + 512, deltas: [delta([0, 0, 7, 0, 0, 9]), delta([3, 0, 0, 4, 0, 0])] } as unknown as PloopImage;
    expect(allocatedRanges(image)).toEqual([r(0, M), r(2 * M, 4 * M), r(5 * M, 5 * M + 512)]);
  });
});

describe('a failed rollback', () => {
  it('says the state and the command that returns to the former size', () => {
    const text = rollbackFailedMessage('/vm/a.qcow2', 64 * M, 128 * M, new Error('qemu-img failed with exit code 1\nmore'));
    expect(text).toMatch(/Undoing the grow failed too \(qemu-img failed with exit code 1\): the image stays 128 MiB instead of its former 64 MiB/);
    expect(text).toMatch(/run: prl_disk_tool resize --hdd "\/vm\/a\.qcow2" --size 64M/);
  });
});
