// The test set of `npm run mutation` (stryker.config.mjs): the fast unit tests only, one fork (the machine has 2
// shared cores, and Stryker runs its own workers).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    // Left to `npx vitest run test/unit`: the fuzz test (15 s a run here, a random search for crashes rather than
    // assertions on behaviour) and the files that run mkfs, qemu or the exec layer in every test (seconds per
    // mutant on this machine, and they judge tool output rather than the mutated modules' rules).
    exclude: [
      'test/unit/ploop/fuzz.test.ts',
      'test/unit/fs/fill.test.ts',
      'test/unit/fs/probe.test.ts',
      'test/unit/qcow2/sharing.test.ts',
      'test/unit/qcow2/reader.test.ts',
      'test/unit/exec-cancel.test.ts',
    ],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 1, minForks: 1 } },
    testTimeout: 60 * 1000,
    reporters: ['default'],
  },
});
