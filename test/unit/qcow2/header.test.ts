// The native qcow2 header rules that judge an image before any qemu tool opens it: overlapping metadata and the
// snapshot count, on headers of images qemu-img made, poked field by field.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeQcow2Header, headerFindings, MAX_SNAPSHOTS, unsupportedFeatures } from '../../../src/formats/qcow2/header.js';
import { getField, qcow2, QCOW2, setField } from '../../helpers/hostile-images.js';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-header-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
function judged(poke: (file: string) => void): { findings: string[]; unsupported: string[] } {
  const file = qcow2(join(dir, `h${++counter}.qcow2`), '64M', '-o', 'cluster_size=65536');
  poke(file);
  const header = decodeQcow2Header(readFileSync(file))!;
  // Judged against a file large enough that only the rule under test can fire.
  return { findings: headerFindings(header, Math.max(statSync(file).size, 64 * 1024 * 1024)), unsupported: unsupportedFeatures(header) };
}

describe('qcow2 header rules', () => {
  it('finds nothing in an image qemu-img made', () => {
    expect(judged(() => {})).toEqual({ findings: [], unsupported: [] });
  });

  it('finds a refcount table over the L1 table, and a snapshot table over the refcount table', () => {
    expect(judged((f) => setField(f, QCOW2.refcountTableOffset, getField(f, QCOW2.l1TableOffset))).findings).toEqual(['its L1 table and its refcount table overlap']);
    const onHeader = judged((f) => {
      setField(f, QCOW2.snapshotCount, 1n);
      setField(f, QCOW2.snapshotsOffset, getField(f, QCOW2.refcountTableOffset));
    });
    expect(onHeader.findings).toEqual(['its refcount table and its snapshot table overlap']);
  });

  it('sizes the snapshot table by its count: a table past the end of the file is found', () => {
    const file = qcow2(join(dir, 'small.qcow2'));
    setField(file, QCOW2.snapshotsOffset, 1n << 20n);
    setField(file, QCOW2.snapshotCount, 1000n);
    expect(headerFindings(decodeQcow2Header(readFileSync(file))!, 1 << 20)).toEqual([`its snapshot table (40000 bytes at ${1 << 20}) lies past the end of the ${1 << 20}-byte file`]);
  });

  it(`refuses more than ${MAX_SNAPSHOTS} internal snapshots from the count alone`, () => {
    const at = (count: bigint): string[] => judged((f) => {
      setField(f, QCOW2.snapshotsOffset, 16n << 20n);
      setField(f, QCOW2.snapshotCount, count);
    }).unsupported;
    expect(at(BigInt(MAX_SNAPSHOTS))).toEqual([]);
    expect(at(BigInt(MAX_SNAPSHOTS + 1))).toEqual([`it has ${MAX_SNAPSHOTS + 1} internal snapshots, more than the ${MAX_SNAPSHOTS} this tool handles (delete some with qemu-img snapshot -d)`]);
  });
});
