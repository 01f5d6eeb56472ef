// One temporary root per test file, removed after it, with a fresh numbered folder for each case.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export function caseFolders(prefix: string): { root: string; fresh: () => string } {
  const root = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  let counter = 0;
  return {
    root,
    fresh: () => {
      const dir = join(root, `case${++counter}`);
      mkdirSync(dir, { recursive: true });
      return dir;
    },
  };
}
