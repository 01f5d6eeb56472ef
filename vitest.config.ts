// Unit tests run in parallel threads; end-to-end files run two at a time (the machine has 2 cores).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 20 * 60 * 1000,
    hookTimeout: 20 * 60 * 1000,
    reporters: ['default'],
  },
});
