// Header codec on a header made by real qemu-img, and one-field corruptions that each give one finding.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeBat, tableSlots } from '../../../src/formats/ploop/bat.js';
import { type RuleId, fatalFindings, validateDelta } from '../../../src/formats/ploop/check.js';
import {
  HEADER_FIELDS,
  IN_USE_CLOSED_V21,
  IN_USE_OPEN,
  type PloopHeader,
  SIGNATURE_V1,
  decodeHeader,
  encodeHeader,
} from '../../../src/formats/ploop/header.js';
import { qemuCreate, qemuIo, removeDir, tempDir } from './fixtures.js';

// Captured from `qemu-img create -f parallels -o cluster_size=1M a.hds 100M` (QEMU 7.2).
const QEMU_HEADER_HEX =
  '576974686f7546726553706163457874' + '02000000' + '10000000' + '90010000' + '00080000' + '64000000' + '0020030000000000' + '00000000' + '00080000' + '00000000' + '0000000000000000';

interface Fixture {
  header: PloopHeader;
  bat: Uint32Array;
  size: number;
}

let dir: string;
let withData: Fixture;
let empty: Fixture;

function load(path: string): Fixture {
  const bytes = readFileSync(path);
  const header = decodeHeader(bytes);
  const bat = decodeBat(bytes.subarray(64, 64 + tableSlots(header, bytes.length) * 4));
  return { header, bat, size: bytes.length };
}

beforeAll(() => {
  dir = tempDir();
  // 64 KiB clusters, 64 MiB: 1024 BAT entries in the first cluster; data in virtual clusters 0, 3, 16.
  qemuCreate(join(dir, 'data.hds'), 64 << 20, 64 << 10);
  qemuIo(join(dir, 'data.hds'), ['write -P 0x11 0 64k', 'write -P 0x22 192k 64k', 'write -P 0x33 1M 64k']);
  withData = load(join(dir, 'data.hds'));
  qemuCreate(join(dir, 'empty.hds'), 64 << 20, 64 << 10);
  empty = load(join(dir, 'empty.hds'));
});
afterAll(() => removeDir(dir));

describe('header codec', () => {
  test('decodes the captured qemu-img header field by field', () => {
    const h = decodeHeader(Buffer.from(QEMU_HEADER_HEX, 'hex'));
    expect(h).toEqual({
      magic: 'WithouFreSpacExt',
      version: 2,
      heads: 16,
      cylinders: 400,
      clusterSectors: 2048,
      batEntries: 100,
      sizeSectors: 204800,
      inUse: 0,
      dataOffsetSectors: 2048,
      flags: 0,
      extOffsetSectors: 0,
    });
  });

  test('encode(decode(x)) is byte-exact on the captured header', () => {
    const bytes = Buffer.from(QEMU_HEADER_HEX, 'hex');
    expect(encodeHeader(decodeHeader(bytes)).equals(bytes)).toBe(true);
  });

  test('encode(decode(x)) is byte-exact on a header qemu-img makes now', () => {
    const bytes = readFileSync(join(dir, 'data.hds')).subarray(0, 64);
    expect(encodeHeader(decodeHeader(bytes)).equals(bytes)).toBe(true);
  });

  test('the field table covers all 64 bytes without overlap', () => {
    const covered = new Array(64).fill(0);
    for (const f of HEADER_FIELDS) for (let i = f.offset; i < f.offset + f.width; i++) covered[i]++;
    expect(covered.every((n) => n === 1)).toBe(true);
  });

  test('pristine fixtures have no findings', () => {
    expect(validateDelta(withData.header, withData.bat, withData.size)).toEqual([]);
    expect(validateDelta(empty.header, empty.bat, empty.size)).toEqual([]);
  });
});

type Poke = (f: Fixture) => void;
const cases: [string, 'data' | 'empty', Poke, RuleId][] = [
  ['magic', 'data', (f) => (f.header.magic = 'WithoutFreeSpacX'), 'signature'],
  ['version', 'data', (f) => (f.header.version = 3), 'version'],
  ['cluster size not a power of two', 'data', (f) => (f.header.clusterSectors = 100), 'cluster-size'],
  ['cluster size 16 KiB', 'data', (f) => (f.header.clusterSectors = 32), 'cluster-size'],
  ['cluster size 128 MiB', 'data', (f) => (f.header.clusterSectors = 262144), 'cluster-size'],
  ['bat entries', 'data', (f) => (f.header.batEntries += 1), 'bat-entries'],
  ['size', 'data', (f) => (f.header.sizeSectors += 128), 'bat-entries'],
  ['data offset misaligned', 'empty', (f) => (f.header.dataOffsetSectors = 100), 'data-offset'],
  ['truncated file', 'empty', (f) => (f.size = 1000), 'table-past-eof'],
  ['in-use value', 'data', (f) => (f.header.inUse = 0x12345678), 'in-use-value'],
  ['version convert flag', 'data', (f) => (f.header.flags = 2), 'version-convert'],
  ['entry past the end', 'data', (f) => (f.bat[3] = 1000), 'entry-past-eof'],
  ['duplicate entry', 'data', (f) => (f.bat[3] = f.bat[0]!), 'entry-duplicate'],
  ['slack slot', 'data', (f) => (f.bat[f.header.batEntries + 5] = 7), 'slack-nonzero'],
  ['extension offset', 'data', (f) => ((f.header.extOffsetSectors = 7), (f.header.inUse = IN_USE_CLOSED_V21)), 'ext-offset'],
];

describe('one poke, one finding', () => {
  test.each(cases)('%s', (_name, which, poke, rule) => {
    const base = which === 'data' ? withData : empty;
    const f: Fixture = { header: { ...base.header }, bat: base.bat.slice(), size: base.size };
    poke(f);
    const fatal = fatalFindings(validateDelta(f.header, f.bat, f.size));
    expect(fatal.map((x) => x.rule)).toEqual([rule]);
    expect(fatal[0]!.message.length).toBeGreaterThan(20);
  });

  test('an in-use mark is one recoverable finding', () => {
    const findings = validateDelta({ ...withData.header, inUse: IN_USE_OPEN }, withData.bat, withData.size);
    expect(findings.map((f) => [f.rule, f.recoverable])).toEqual([['in-use-set', true]]);
  });

  test('a leaked tail is one recoverable finding', () => {
    const findings = validateDelta(withData.header, withData.bat, withData.size + 65536);
    expect(findings.map((f) => [f.rule, f.recoverable])).toEqual([['tail-leak', true]]);
  });

  test('an extension offset is ignored when in_use is 0 (old software)', () => {
    expect(validateDelta({ ...withData.header, extOffsetSectors: 7 }, withData.bat, withData.size)).toEqual([]);
  });

  test('v1: high half of the size and a misaligned sector entry', () => {
    const v1: PloopHeader = { ...withData.header, magic: SIGNATURE_V1 };
    const bat = withData.bat.map((e) => e * v1.clusterSectors);
    expect(validateDelta(v1, bat, withData.size)).toEqual([]);
    expect(fatalFindings(validateDelta({ ...v1, sizeSectors: v1.sizeSectors + 2 ** 32 }, bat, withData.size)).map((f) => f.rule)).toEqual(['size-high-bits']);
    const skewed = bat.slice();
    skewed[3] = skewed[3]! + 1;
    expect(fatalFindings(validateDelta(v1, skewed, withData.size)).map((f) => f.rule)).toEqual(['entry-misaligned']);
    const intoHeader = bat.slice();
    intoHeader[3] = 1; // sector 1: inside the BAT
    expect(fatalFindings(validateDelta(v1, intoHeader, withData.size)).map((f) => f.rule)).toEqual(['entry-below-data']);
  });

  test('v1 with first-block offset 0 or off the cluster grid: ploop check\'s rule, named as such (not "entries not aligned")', () => {
    const v1: PloopHeader = { ...withData.header, magic: SIGNATURE_V1 };
    const bat = withData.bat.map((e) => e * v1.clusterSectors);
    for (const dataOffsetSectors of [0, v1.clusterSectors + 8]) {
      const findings = validateDelta({ ...v1, dataOffsetSectors }, bat, withData.size);
      expect(findings[0]!.rule).toBe('data-offset');
      expect(findings[0]!.message).toMatch(/ploop requires a non-zero offset that is a multiple of the cluster size .*v1\) deltas too/);
    }
  });
});
