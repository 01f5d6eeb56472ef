// guestfish's text forms → values.
import { describe, expect, it } from 'vitest';
import { parseFields, parseStructList } from '../../src/guest/parse.js';
import { quoteGuestfishArg } from '../../src/guest/session.js';

describe('guestfish output', () => {
  it('reads a struct list', () => {
    const text = '[0] = {\n  part_num: 1\n  part_start: 1048576\n}\n[1] = {\n  part_num: 2\n  part_start: 9437184\n}\n';
    expect(parseStructList(text)).toEqual([
      { part_num: '1', part_start: '1048576' },
      { part_num: '2', part_start: '9437184' },
    ]);
  });
  it('reads a hash, keeping empty values', () => {
    expect(parseFields('/dev/sda1: ext4\n/dev/sda2: unknown\nlabel:\n')).toEqual({ '/dev/sda1': 'ext4', '/dev/sda2': 'unknown', label: '' });
  });
  it('quotes arguments so that spaces, quotes and backslashes survive', () => {
    expect(quoteGuestfishArg('a b')).toBe('"a b"');
    expect(quoteGuestfishArg('say "hi" \\ now')).toBe('"say \\"hi\\" \\\\ now"');
  });
});
