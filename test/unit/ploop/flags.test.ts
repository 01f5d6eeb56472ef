// The header a close leaves: in-use 0 (ploop's check writes 0 and copy_delta refuses anything else, "v2.1"
// included) and CIF_Empty set exactly when no cluster lies past the BAT area (ploop 1.x lib/check.c).
import { mkdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { clearInUse, closeDelta, closedFlags, markInUse, openDelta, truncateDelta } from '../../../src/formats/ploop/delta.js';
import { FLAG_EMPTY, IN_USE_CLOSED_V21, decodeHeader, encodeHeader, type PloopHeader } from '../../../src/formats/ploop/header.js';
import { makePloop, removeDir, tempDir } from './fixtures.js';

let dir: string;
let n = 0;
beforeAll(() => {
  dir = tempDir('ploop-flags-');
});
afterAll(() => removeDir(dir));

function headerOf(path: string): PloopHeader {
  return decodeHeader(readFileSync(path).subarray(0, 64));
}

/** A fresh delta, optionally with data, its header edited before our write session opens it. */
function session(writes: string[], edit: Partial<PloopHeader> = {}): string {
  const folder = join(dir, `img${++n}`);
  mkdirSync(folder);
  const path = makePloop(folder, 8 * 1024 * 1024, 1024 * 1024, writes);
  if (Object.keys(edit).length > 0) {
    const delta = openDelta(path, { write: true });
    writeSync(delta.fd, encodeHeader({ ...delta.header, ...edit }), 0, 64, 0);
    closeDelta(delta);
  }
  return path;
}

describe('closing a delta', () => {
  test('an empty delta closes with in-use 0 and CIF_Empty set', () => {
    const path = session([]);
    const delta = openDelta(path, { write: true });
    markInUse(delta);
    clearInUse(delta);
    closeDelta(delta);
    expect(headerOf(path).inUse).toBe(0);
    expect(headerOf(path).flags & FLAG_EMPTY).toBe(FLAG_EMPTY);
  });

  test('a delta holding data closes with CIF_Empty clear, even when it was set (ploop init sets it)', () => {
    const path = session(['write -P 0xab 0 1M'], { flags: FLAG_EMPTY | 0x100 });
    const delta = openDelta(path, { write: true });
    markInUse(delta);
    clearInUse(delta);
    closeDelta(delta);
    expect(headerOf(path).inUse).toBe(0);
    expect(headerOf(path).flags).toBe(0x100);
  });

  test('"v2.1" left by an earlier close becomes 0; a tail past the BAT counts as data', () => {
    const path = session([], { inUse: IN_USE_CLOSED_V21 });
    const delta = openDelta(path, { write: true });
    expect(closedFlags(delta) & FLAG_EMPTY).toBe(FLAG_EMPTY);
    truncateDelta(delta, delta.fileSizeBytes + 1024 * 1024);
    expect(closedFlags(delta) & FLAG_EMPTY).toBe(0);
    clearInUse(delta);
    closeDelta(delta);
    expect(headerOf(path).inUse).toBe(0);
  });
});
