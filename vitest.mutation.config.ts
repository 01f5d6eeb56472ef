// The test set of `npm run mutation` (stryker.config.mjs): the fast unit tests only, one fork (the machine has 2
// shared cores, and Stryker runs its own workers).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    // 15 s a run here, a random search for crashes rather than assertions on behaviour: left to `npx vitest run test/unit`.
    exclude: ['test/unit/ploop/fuzz.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 1, minForks: 1 } },
    testTimeout: 60 * 1000,
    reporters: ['default'],
  },
});
