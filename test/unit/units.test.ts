// SIZE parsing and the unit arithmetic.
import { describe, expect, it } from 'vitest';
import { alignDown, alignUp, formatBytes, formatSizeArgument, parseSize, parseUnit, toUnitCeil } from '../../src/util/units.js';

describe('parseSize', () => {
  it.each([
    ['1', 2 ** 20],
    ['100', 100 * 2 ** 20],
    ['1K', 1024],
    ['4k', 4096],
    ['2M', 2 * 2 ** 20],
    ['20G', 20 * 2 ** 30],
    ['1T', 2 ** 40],
    ['007G', 7 * 2 ** 30],
  ])('%s → %d bytes', (text, bytes) => expect(parseSize(text)).toBe(bytes));

  it.each(['', 'G', '1.5G', '-1', '+1', '1 G', '1GB', '1KiB', '0', '0G', '1e3', '65T', '99999999999999999999'])('rejects "%s"', (text) => {
    expect(() => parseSize(text)).toThrow();
  });
});

describe('unit arithmetic', () => {
  it('rounds minimums up to the unit', () => {
    expect(toUnitCeil(2 ** 20 + 1, 'M')).toBe(2);
    expect(toUnitCeil(2 ** 20, 'M')).toBe(1);
    expect(toUnitCeil(1, 'G')).toBe(1);
  });
  it('aligns', () => {
    expect(alignUp(2049, 2048)).toBe(4096);
    expect(alignDown(4095, 2048)).toBe(2048);
  });
  it('spells sizes the way --size accepts them', () => {
    expect(formatSizeArgument(2 ** 30)).toBe('1G');
    expect(formatSizeArgument(2 ** 30 + 1)).toBe('1025M');
    expect(parseSize(formatSizeArgument(123_456_789))).toBeGreaterThanOrEqual(123_456_789);
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0 bytes'],
    [1023, '1023 bytes'],
    [1024, '1 KiB'],
    [1536, '1.5 KiB'],
    [2 ** 20, '1 MiB'],
    [300 * 2 ** 20, '300 MiB'],
    [1.5 * 2 ** 30, '1.5 GiB'],
    [2 ** 40, '1 TiB'],
    [-2 * 2 ** 20, '-2 MiB'],
  ])('%d → %s', (bytes, text) => expect(formatBytes(bytes)).toBe(text));
});

describe('parseUnit', () => {
  it.each([['k', 'K'], ['M', 'M'], ['g', 'G'], ['T', 'T']])('%s → %s', (text, unit) => expect(parseUnit(text)).toBe(unit));
  it.each(['', 'B', 'KB', 'P'])('rejects "%s"', (text) => expect(() => parseUnit(text)).toThrow(`Invalid unit "${text}"`));
});
