// BAT entries and the header's derived numbers, table-driven, against parallels.txt: a v2 entry counts clusters,
// a v1 entry sectors; the BAT region runs from byte 64 to the data area; v1 uses only the low 32 bits of the size.
import { describe, expect, it } from 'vitest';
import { decodeBat, encodeEntry, entryToOffset, offsetToEntry, slotOffset, tableSlots } from '../../../src/formats/ploop/bat.js';
import {
  type PloopHeader,
  SIGNATURE_V1,
  SIGNATURE_V2,
  clusterBytes,
  cylindersFor,
  dataOffsetBytes,
  decodeHeader,
  effectiveSizeSectors,
  encodeHeader,
  formatVersion,
} from '../../../src/formats/ploop/header.js';

const MiB = 1024 * 1024;

function header(fields: Partial<PloopHeader>): PloopHeader {
  return {
    magic: SIGNATURE_V2,
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
    ...fields,
  };
}
const v1 = (fields: Partial<PloopHeader> = {}): PloopHeader => header({ magic: SIGNATURE_V1, ...fields });
const v2 = (fields: Partial<PloopHeader> = {}): PloopHeader => header(fields);

describe('header numbers', () => {
  it.each([
    [SIGNATURE_V1, 1],
    [SIGNATURE_V2, 2],
    ['WithoutFreeSpacf', undefined],
    ['', undefined],
  ])('formatVersion("%s") = %s', (magic, version) => expect(formatVersion(header({ magic }))).toBe(version));

  it.each([
    [64, 32 * 1024],
    [2048, MiB],
  ])('clusterBytes of %d sectors', (sectors, bytes) => expect(clusterBytes(v2({ clusterSectors: sectors }))).toBe(bytes));

  it.each([
    ['v2 keeps all 64 bits', v2({ sizeSectors: 2 ** 32 + 5 }), 2 ** 32 + 5],
    ['v1 keeps the low 32 bits', v1({ sizeSectors: 2 ** 32 + 5 }), 5],
    ['v1 below 2^32', v1({ sizeSectors: 2 ** 32 - 1 }), 2 ** 32 - 1],
  ])('effectiveSizeSectors: %s', (_name, h, sectors) => expect(effectiveSizeSectors(h)).toBe(sectors));

  it.each([
    ['a given data offset', v2({ dataOffsetSectors: 2048, batEntries: 1 }), MiB],
    ['v1 with 0: right after the BAT, 112 entries fill one sector', v1({ dataOffsetSectors: 0, batEntries: 112 }), 512],
    ['v1 with 0: 113 entries need a second sector', v1({ dataOffsetSectors: 0, batEntries: 113 }), 1024],
    ['v1 with 0 and no entries: the header sector', v1({ dataOffsetSectors: 0, batEntries: 0 }), 512],
  ])('dataOffsetBytes: %s', (_name, h, bytes) => expect(dataOffsetBytes(h)).toBe(bytes));

  it.each([
    [204800, 16, 400],
    [204799, 16, 399],
    [204800, 0, 400],
    [204800, 64, 100],
    [2 ** 50, 1, 0xffffffff],
  ])('cylindersFor(%d sectors, %d heads) = %d', (sectors, heads, cylinders) => expect(cylindersFor(sectors, heads)).toBe(cylinders));

  it('decodes every field from its offset and encodes back the same bytes', () => {
    const h = v2({ version: 3, heads: 5, cylinders: 6, clusterSectors: 7, batEntries: 8, sizeSectors: 2 ** 40 + 9, inUse: 10, dataOffsetSectors: 11, flags: 12, extOffsetSectors: 2 ** 33 + 13 });
    const bytes = encodeHeader(h);
    expect(bytes.length).toBe(64);
    expect(bytes.toString('latin1', 0, 16)).toBe(SIGNATURE_V2);
    expect([16, 20, 24, 28, 32, 44, 48, 52].map((offset) => bytes.readUInt32LE(offset))).toEqual([3, 5, 6, 7, 8, 10, 11, 12]);
    expect(bytes.readBigUInt64LE(36)).toBe(2n ** 40n + 9n);
    expect(bytes.readBigUInt64LE(56)).toBe(2n ** 33n + 13n);
    expect(decodeHeader(bytes)).toEqual(h);
    // A header inside a longer buffer, at an offset: only its own 64 bytes are read.
    const padded = Buffer.concat([Buffer.alloc(8, 0xff), bytes, Buffer.alloc(8, 0xff)]);
    expect(decodeHeader(padded.subarray(8))).toEqual(h);
  });

  it('saturates a u64 past 2^53 instead of rounding it, and refuses a short buffer', () => {
    const bytes = encodeHeader(v2());
    bytes.writeBigUInt64LE(2n ** 63n, 36);
    expect(decodeHeader(bytes).sizeSectors).toBe(Number.MAX_SAFE_INTEGER);
    bytes.writeBigUInt64LE(BigInt(Number.MAX_SAFE_INTEGER), 36);
    expect(decodeHeader(bytes).sizeSectors).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => decodeHeader(bytes.subarray(0, 63))).toThrow('a ploop header is 64 bytes, got 63');
    expect(() => encodeHeader(v2({ magic: 'short' }))).toThrow('header field magic must be 16 bytes');
  });
});

describe('BAT entries', () => {
  it.each([
    [0, 64],
    [1, 68],
    [1000, 4064],
  ])('slot %d is at byte %d', (index, offset) => expect(slotOffset(index)).toBe(offset));

  it.each([
    ['v2: clusters', v2(), 3, 3 * MiB],
    ['v2 with 32 KiB clusters', v2({ clusterSectors: 64 }), 3, 3 * 32 * 1024],
    ['v1: sectors', v1(), 4096, 4096 * 512],
  ])('entryToOffset, %s', (_name, h, entry, offset) => {
    expect(entryToOffset(h, entry)).toBe(offset);
    expect(offsetToEntry(h, offset)).toBe(entry);
  });

  it('offsetToEntry refuses an offset that is not a whole unit, or that no u32 holds', () => {
    expect(() => offsetToEntry(v2(), MiB + 512)).toThrow(`offset ${MiB + 512} is not a multiple of ${MiB}`);
    expect(() => offsetToEntry(v1(), 513)).toThrow('offset 513 is not a multiple of 512');
    expect(offsetToEntry(v1(), 0xffffffff * 512)).toBe(0xffffffff);
    expect(() => offsetToEntry(v1(), 2 ** 32 * 512)).toThrow(`offset ${2 ** 32 * 512} does not fit a BAT entry`);
  });

  it.each([
    ['bounded by the data area', v2({ dataOffsetSectors: 2048 }), 10 * MiB, (MiB - 64) / 4],
    ['bounded by a short file', v2({ dataOffsetSectors: 2048 }), 64 + 4 * 10 + 3, 10],
    ['a file shorter than the header holds none', v2(), 10, 0],
    ['exactly the header', v2(), 64, 0],
  ])('tableSlots, %s', (_name, h, fileSize, slots) => expect(tableSlots(h, fileSize)).toBe(slots));

  it('decodes little-endian u32 entries and ignores a trailing partial one; encodes one entry', () => {
    const bytes = Buffer.from([1, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 9, 9]);
    expect([...decodeBat(bytes)]).toEqual([1, 256, 0xffffffff]);
    expect([...decodeBat(bytes.subarray(4))]).toEqual([256, 0xffffffff]);
    expect([...encodeEntry(0x01020304)]).toEqual([4, 3, 2, 1]);
  });
});
