// SIZE's upper bound at its edge: 64T itself is accepted in every unit, one unit more is refused, and the
// other malformed spellings (zero, decimals, signs) are refused with a UsageError (issue 17 item 3).
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/util/errors.js';
import { MAX_SIZE_BYTES, parseSize, TiB } from '../../src/util/units.js';

const LIMIT = 64 * TiB;

describe('SIZE bounds', () => {
  it('the limit is 64 TiB', () => expect(MAX_SIZE_BYTES).toBe(LIMIT));

  it.each([
    ['64T', '65T'],
    ['65536G', '65537G'],
    ['67108864M', '67108865M'],
    ['67108864', '67108865'],
    ['68719476736K', '68719476737K'],
    ['68719476736k', '68719476737k'],
  ])('%s is accepted, %s (one unit more) is refused', (atLimit, past) => {
    expect(parseSize(atLimit)).toBe(LIMIT);
    expect(() => parseSize(past)).toThrow(UsageError);
    expect(() => parseSize(past)).toThrow(/largest supported size is 64T/);
  });

  it('the smallest size, 1K, is accepted', () => expect(parseSize('1K')).toBe(1024));

  it.each(['0', '0K', '0M', '0G', '0T', '000'])('zero "%s" is refused', (text) => {
    expect(() => parseSize(text)).toThrow(/must not be zero/);
  });

  it.each(['1.5G', '0.5T', '64.0T', '1,5G', '.5G', '1.G', '-1G', '+1G', '-0', '+64T', '-64T', ' 1G', '1G ', '1e3M', '0x10G'])(
    'malformed "%s" is refused as a usage error',
    (text) => {
      expect(() => parseSize(text)).toThrow(UsageError);
      expect(() => parseSize(text)).toThrow(/whole number/);
    },
  );
});
