// Mutation testing of the pure modules (docs/testing.md, "Mutation testing"): `npm run mutation`.
// Only code that runs no tool and needs no appliance is mutated, and only the unit tests judge the mutants.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts' },
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  coverageAnalysis: 'perTest',
  mutate: [
    'src/util/units.ts',
    'src/cli/args.ts',
    'src/cli/args-spelling.ts',
    'src/partitions/mbr.ts',
    'src/partitions/layout.ts',
    'src/formats/ploop/bat.ts',
    'src/formats/ploop/header.ts',
    'src/commands/resize/minimum.ts',
  ],
  ignorePatterns: ['dist', 'reports', '.bench-dist', 'work-images', 'bench', 'man'],
  reporters: ['clear-text', 'progress', 'json', 'html'],
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  incrementalFile: 'reports/mutation/stryker-incremental.json',
  thresholds: { high: 90, low: 85, break: 85 },
  // Static mutants (module-level tables) need every test file reloaded for each: two thirds of the run's time.
  ignoreStatic: true,
  concurrency: 1,
  timeoutMS: 10000,
  tempDirName: '.stryker-tmp',
};
