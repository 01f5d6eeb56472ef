// Output contracts: --json of every command against docs/json-schema.json, NDJSON events, text mode's empty
// stderr on success, EPIPE, progress on a terminal and in pipes, -v logging, and the man page.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { buildImage, type BuiltImage } from '../factory/index.js';
import { cliPath, runCli } from '../helpers/cli.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const schema = JSON.parse(readFileSync(join(root, 'docs', 'json-schema.json'), 'utf8')) as object;
const ajv = new Ajv({ allErrors: true });
ajv.addSchema(schema, 'prl');
const validator = (definition: string) => ajv.getSchema(`prl#/definitions/${definition}`)!;

function expectValid(definition: string, value: unknown): void {
  const validate = validator(definition);
  const ok = validate(value);
  expect(ok, `${definition}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value)}`).toBe(true);
}

function expectEvents(stderr: string): unknown[] {
  const events = stderr.split('\n').filter(Boolean).map((line) => JSON.parse(line) as unknown);
  for (const event of events) expectValid('event', event);
  return events;
}

let dir: string;
let vm: BuiltImage;
let ct: BuiltImage;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'prl-output-'));
  vm = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, name: 'vm', sizeMiB: 512, filesMiB: 16, deletedMiB: 16 });
  ct = await buildImage({ format: 'ploop', table: 'none', content: 'ext4', dir, name: 'ct', sizeMiB: 512, filesMiB: 16, deletedMiB: 16 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('--json', () => {
  it('every command prints one object that matches the documented schema, and NDJSON events on stderr', async () => {
    const cases: [string[], string][] = [
      [['resize', '--hdd', vm.hdd, '--info', '--json'], 'resizeInfo'],
      [['compact', '--hdd', ct.hdd, '--info', '--json'], 'compactInfo'],
      [['resize', '--hdd', vm.hdd, '--size', '768M', '--resize_partition', '--json'], 'change'],
      [['compact', '--hdd', vm.hdd, '--json', '-n'], 'change'],
      [['merge', '--hdd', vm.hdd, '--json'], 'change'],
      [['convert', '--hdd', vm.hdd, '--plain', '--json'], 'change'],
      [['convert', '--hdd', ct.hdd, '--plain', '--json', '-n'], 'change'],
      [['resize', '--hdd', join(dir, 'nothing.qcow2'), '--info', '--json'], 'error'],
    ];
    for (const [args, definition] of cases) {
      const result = await runCli(args);
      expect(result.code, `${args.join(' ')}\n${result.stderr}`).toBe(definition === 'error' ? 3 : 0);
      const lines = result.stdout.split('\n').filter(Boolean);
      expect(lines).toHaveLength(1);
      expectValid(definition, JSON.parse(lines[0]!));
      if (definition === 'error') expect(result.stderr).toMatch(/^Invalid disk path ".*nothing.qcow2": no such file/);
      else expectEvents(result.stderr);
    }
    const grown = JSON.parse((await runCli(['resize', '--hdd', vm.hdd, '--info', '--json'])).stdout) as { size: number };
    expect(grown.size).toBe(768 * 2 ** 20);
  });
});

describe('text mode', () => {
  // The dispatcher takes any stderr byte as failure (Task_ConvertDisks.cpp; see test/e2e/dispatcher.test.ts).
  it('every successful command, on qcow2 and on ploop, writes nothing on stderr', async () => {
    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'top.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 4M', base], { stdio: 'ignore' });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
    const runs: string[][] = [];
    for (const hdd of [vm.hdd, ct.hdd]) {
      runs.push(
        ['resize', '--hdd', hdd, '--info'],
        ['compact', '--hdd', hdd, '--info'],
        ['compact', '--hdd', hdd],
        ['resize', '--hdd', hdd, '--size', '800M'],
        ['merge', '--hdd', hdd],
        ['convert', '--hdd', hdd, '--expanding'],
        ['convert', '--hdd', hdd, '--plain'],
      );
    }
    runs.push(['merge', '--hdd', top, '--external']);
    for (const args of runs) {
      // An internal snapshot for merge to delete (resize refuses an image that has one).
      if (args[0] === 'merge' && args[2] === vm.hdd) execFileSync('qemu-img', ['snapshot', '-c', 'snap', vm.hdd]);
      const result = await runCli(args);
      expect(result.code, `${args.join(' ')}\n${result.stderr}`).toBe(0);
      expect(result.stderr, args.join(' ')).toBe('');
      expect(result.stdout, args.join(' ')).not.toBe('');
      if (args[0] === 'compact' && args.includes('--info')) {
        // Numbers right-aligned in 15 columns, as the original's QString::arg(v, 15) (CommandVm.cpp, CompactInfo).
        const lines = result.stdout.split('\n').filter(Boolean);
        expect(lines.slice(0, 4).map((line) => line.slice(0, 26))).toEqual([
          '        Block size:       ',
          '        Total blocks:     ',
          '        Allocated blocks: ',
          '        Used blocks:      ',
        ]);
        for (const line of lines.slice(0, 4)) expect(line.slice(26), line).toMatch(/^ *\d+$/);
        for (const line of lines.slice(0, 4)) expect(line, line).toHaveLength(26 + 15);
      }
    }
    expect(existsSync(base)).toBe(false);
  });

  it('a reader that closes stdout (| head -1) does not turn a finished resize into a failure (EPIPE ignored)', async () => {
    const child = spawn(process.execPath, [cliPath(), 'resize', '--hdd', vm.hdd, '--size', '832M'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(0);
    expect(stderr).toBe('');
    const grown = JSON.parse((await runCli(['resize', '--hdd', vm.hdd, '--info', '--json'])).stdout) as { size: number };
    expect(grown.size).toBe(832 * 2 ** 20);
  });
});

describe('progress', () => {
  let big: string;
  beforeAll(() => {
    big = join(dir, 'big.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', big, '2G']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1536M', big], { stdio: 'ignore' });
  });

  it('advances on a terminal (script(1) gives the tool a pseudo-terminal)', () => {
    const command = `${process.execPath} ${cliPath()} convert --hdd ${big} --plain`;
    const result = spawnSync('script', ['-qfec', command, '/dev/null'], { encoding: 'utf8' });
    expect(result.status, result.stdout).toBe(0);
    const percents = [...result.stdout.matchAll(/\] (\d+) %/g)].map((match) => Number(match[1]));
    expect(new Set(percents).size).toBeGreaterThanOrEqual(3);
    expect(percents.at(-1)).toBe(100);
    expect([...percents].sort((a, b) => a - b)).toEqual(percents);
  });

  it('prints "NN %" lines on stdout when it is not a terminal, and NDJSON progress under --json', async () => {
    const plain = await runCli(['convert', '--hdd', big, '--expanding']);
    expect(plain.code).toBe(0);
    expect(plain.stderr).toBe('');
    const lines = plain.stdout.split('\n').filter((line) => /^\d+ %$/.test(line)).map((line) => parseInt(line, 10));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    expect(lines.at(-1)).toBe(100);

    const json = await runCli(['convert', '--hdd', big, '--plain', '--json']);
    expect(json.code).toBe(0);
    const progress = expectEvents(json.stderr).filter((event) => (event as { event: string }).event === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(3);
  });
});

describe('-v and the man page', () => {
  it('-v prints every external command with its duration and every plan step (on stdout, as the original)', async () => {
    const result = await runCli(['convert', '--hdd', vm.hdd, '--expanding', '-v']);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(/^\+ qemu-img info .* \(\d+\.\d\d s, exit 0\)$/m);
    expect(result.stdout).toMatch(/^\+ qemu-img convert .* \(\d+\.\d\d s, exit 0\)$/m);
    expect(result.stdout).toMatch(/^step 1\/\d+: /m);
  });

  it('man -l renders the man page', () => {
    const text = execFileSync('man', ['-l', join(root, 'man', 'prl_disk_tool.8')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MAN_KEEP_FORMATTING: '' } });
    expect(text).toMatch(/PRL_DISK_TOOL\(8\)/);
    for (const section of ['SYNOPSIS', 'OPERATIONS', 'EXIT STATUS', 'LOCKING']) expect(text).toContain(section);
  });
});
