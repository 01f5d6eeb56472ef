// Benchmarks prl-disk-tool against its peers in one run: `node dist/bench/run.js [--scale full|small] [...]` (see docs/benchmarks.md).
import { statfsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tool, type ContentKind, type ImageFormat } from '../test/factory/index.js';
import { buildBase, SCALES, spaceNeededBytes, type Scale } from './images.js';
import { describeMachine } from './machine.js';
import { killCurrent } from './measure.js';
import { failures, renderMarkdown, renderText, verdicts, type Results } from './report.js';
import { OPERATIONS, runComparisons, type Comparison, type Operation } from './scenarios.js';
import { renderScale, runScale, type ScaleResult } from './scale.js';

const USAGE = `usage: node dist/bench/run.js [--scale full|small] [--formats qcow2,ploop] [--contents ext4,ntfs]
       [--ops ${OPERATIONS.join(',')}] [--work DIR] [--out DIR] [--keep]
       node dist/bench/run.js --render bench/results/<run>.json   (re-print a saved run, rewrite its .md)
       node dist/bench/run.js --scenario scale [--formats qcow2,ploop] [--work DIR]   (256 GiB grow/shrink/compact)
  full: 8 GiB images, 2 GiB of files, 1 GiB deleted (the default); small: 2 GiB images, 512 MiB of files, 256 MiB deleted.
`;

const here = dirname(fileURLToPath(import.meta.url));
// Compiled to dist/bench/run.js: the CLI is dist/src/cli/main.js, the repository two levels up.
const repo = resolve(here, '..', '..');
const cli = resolve(here, '..', 'src', 'cli', 'main.js');

function list<T extends string>(value: string, allowed: readonly T[], what: string): T[] {
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  for (const item of items) if (!allowed.includes(item as T)) throw new Error(`unknown ${what} "${item}"; choose from ${allowed.join(', ')}`);
  return items as T[];
}

function log(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      scale: { type: 'string', default: 'full' },
      formats: { type: 'string', default: 'qcow2,ploop' },
      contents: { type: 'string', default: 'ext4,ntfs' },
      ops: { type: 'string', default: OPERATIONS.join(',') },
      work: { type: 'string' },
      out: { type: 'string', default: join(repo, 'bench', 'results') },
      keep: { type: 'boolean', default: false },
      render: { type: 'string' },
      scenario: { type: 'string', default: 'compare' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.render !== undefined) {
    // Re-renders a saved run (after a change to the report): the measurements are kept, verdicts recomputed.
    const saved = JSON.parse(await readFile(values.render, 'utf8')) as Results;
    const results: Results = { ...saved, verdicts: verdicts(saved.comparisons, saved.scale), failures: failures(saved.comparisons) };
    await writeFile(values.render, JSON.stringify(results, null, 2) + '\n');
    await writeFile(values.render.replace(/\.json$/, '.md'), renderMarkdown(results));
    process.stdout.write(renderText(results));
    return 0;
  }
  if (values.scenario !== 'compare' && values.scenario !== 'scale') throw new Error(`unknown scenario "${values.scenario}"; choose compare or scale`);
  const scale: Scale | undefined = SCALES[values.scale as Scale['name']];
  if (scale === undefined) throw new Error(`unknown scale "${values.scale}"; choose full or small`);
  const formats = list<ImageFormat>(values.formats!, ['qcow2', 'ploop'], 'format');
  const contents = list<ContentKind>(values.contents!, ['ext2', 'ext3', 'ext4', 'ntfs', 'btrfs', 'xfs'], 'content');
  const ops = list<Operation>(values.ops!, OPERATIONS, 'operation');

  for (const needed of ['qemu-img', 'guestfish', 'virt-resize', 'virt-sparsify', 'virt-df']) {
    await tool('sh', ['-c', 'command -v "$1"', 'sh', needed]).catch(() => {
      throw new Error(`${needed} is not installed; run ./scripts/setup.sh first`);
    });
  }
  await tool('test', ['-f', cli]).catch(() => {
    throw new Error(`${cli} is missing; run ./scripts/setup.sh (or npx tsc -p .) first`);
  });

  const work = values.work !== undefined ? resolve(values.work) : await mkdtemp(join(tmpdir(), 'prl-bench-'));
  await mkdir(join(work, 'tmp'), { recursive: true });
  const cleanup = async (): Promise<void> => {
    if (!values.keep) await rm(work, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    killCurrent();
    void cleanup().finally(() => process.exit(130));
  });

  const fs = statfsSync(work);
  const free = fs.bavail * fs.bsize;
  // The scale scenario's images hold about 1.5 GiB at most (the grown image and the peer's copy).
  const need = values.scenario === 'scale' ? 4 * 1024 ** 3 : spaceNeededBytes(scale);
  log(`work folder ${work}: ${(free / 1024 ** 3).toFixed(1)} GiB free, this scale needs about ${(need / 1024 ** 3).toFixed(1)} GiB`);
  if (free < need) throw new Error(`${work} has ${(free / 1024 ** 3).toFixed(1)} GiB free; the ${scale.name} scale needs about ${(need / 1024 ** 3).toFixed(1)} GiB (use --scale small or --work)`);

  // Ours and the peers run the same way: TCG (KVM hangs here), temporary files inside the watched work folder,
  // the appliance cache where it always is (TMPDIR would otherwise move it and force a rebuild).
  const env: Record<string, string> = {
    LC_ALL: 'C',
    LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg',
    LIBGUESTFS_CACHEDIR: process.env.LIBGUESTFS_CACHEDIR ?? process.env.TMPDIR ?? '/var/tmp',
    TMPDIR: join(work, 'tmp'),
  };
  process.env.LIBGUESTFS_BACKEND_SETTINGS = env.LIBGUESTFS_BACKEND_SETTINGS;
  const machine = await describeMachine(work, repo);
  const date = new Date().toISOString().replace(/:\d\d\.\d+Z$/, 'Z').replace(':', '-');
  const command = `node dist/bench/run.js ${process.argv.slice(2).join(' ')}`.trim();

  log('warming up the appliance (not measured)');
  await tool('guestfish', ['-a', '/dev/null', 'run'], { env, timeoutMs: 10 * 60_000 });

  if (values.scenario === 'scale') {
    const runs: ScaleResult[] = [];
    try {
      for (const format of formats) runs.push(await runScale({ cli, env, work, log }, format));
    } finally {
      await cleanup();
    }
    machine.loadAvgEnd = loadavg().map((x) => Math.round(x * 100) / 100);
    await mkdir(values.out!, { recursive: true });
    const base = join(values.out!, `${date}-scale`);
    await writeFile(`${base}.json`, JSON.stringify({ date, command, machine, runs }, null, 2) + '\n');
    await writeFile(`${base}.md`, renderScale(runs));
    process.stdout.write(renderScale(runs));
    log(`results: ${base}.json and ${base}.md`);
    return 0;
  }

  const comparisons: Comparison[] = [];
  const images: Results['images'] = [];
  try {
    for (const format of formats) {
      for (const content of contents) {
        const dir = join(work, `${format}-${content}`);
        log(`building ${format}/${content}: ${scale.sizeMiB} MiB, ${scale.filesMiB} MiB of files, ${scale.deletedMiB} MiB deleted`);
        const base = await buildBase(format, content, scale, join(dir, 'base'));
        images.push({ image: `${format}/${content}`, buildMs: base.buildMs });
        log(`built in ${(base.buildMs / 1000).toFixed(0)} s`);
        comparisons.push(...(await runComparisons({ cli, scale, env, timeoutMs: 90 * 60_000, log }, base, dir, ops)));
        if (!values.keep) await rm(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await cleanup();
  }

  machine.loadAvgEnd = loadavg().map((x) => Math.round(x * 100) / 100);
  const results: Results = { date, scale: scale.name, command, machine, images, comparisons, verdicts: verdicts(comparisons, scale.name), failures: failures(comparisons) };
  await mkdir(values.out!, { recursive: true });
  const base = join(values.out!, `${date}-${scale.name}`);
  await writeFile(`${base}.json`, JSON.stringify(results, null, 2) + '\n');
  await writeFile(`${base}.md`, renderMarkdown(results));
  process.stdout.write(renderText(results));
  log(`results: ${base}.json and ${base}.md`);
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  process.stderr.write(`bench: ${(error as Error).message}\n`);
  process.exitCode = 1;
}
