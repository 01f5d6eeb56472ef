// Images made by real ploop (Debian's 1.15: init v1/v2, 64K/1M/64M clusters, expanded and preallocated, snapshots),
// changed by our tool, then judged by real ploop: `ploop check -r -f -c` on every delta and `ploop snapshot-list`
// on the descriptor, plus qemu-img check and qemu-img compare against a reference. Our merge is compared with
// `ploop snapshot-merge` of a copy. Only compact and resize --info start an appliance (one each).
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync, writeSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { cli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { ploop, ploopGrowOffline, ploopOk, realPloopProblems, settleDelta } from '../helpers/real-ploop.js';
import { readDescriptor } from '../factory/ploop.js';

const MiB = 1024 * 1024;
const { fresh } = caseFolders('prl-real-ploop-');

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
}

/** qemu-io over the whole chain (backing options), so that a partial-cluster write keeps the lower deltas' bytes. */
function chainOpts(chain: readonly string[]): string {
  return chain
    .map((file, depth) => {
      const at = 'backing.'.repeat(depth);
      return `${at}driver=parallels,${at}file.driver=file,${at}file.filename=${file.replace(/,/g, ',,')}`;
    })
    .join(',');
}

async function write(folder: string, ...commands: string[]): Promise<void> {
  const top = readDescriptor(folder).chain;
  run('qemu-io', ['--image-opts', chainOpts(top), ...commands.flatMap((c) => ['-c', c])]);
  await settle(top[0]!);
}

/**
 * QEMU keeps ploop init's CIF_Empty while it writes data, and leaves the unwritten rest of a partly written cluster
 * (ploop 1.x's check calls that "sparse" on ext4): ploop's own repair makes the delta what ploop wants before we start.
 */
async function settle(delta: string): Promise<void> {
  settleDelta(delta);
}

/** The virtual content of a folder's chain as a raw file. */
function exportRaw(folder: string, out: string): string {
  run('qemu-img', ['convert', '--image-opts', chainOpts(readDescriptor(folder).chain), '-O', 'raw', out]);
  return out;
}

function compare(a: string, b: string): { equal: boolean; output: string } {
  try {
    return { equal: true, output: run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b]) };
  } catch (error) {
    return { equal: false, output: String((error as { stdout?: string }).stdout ?? error) };
  }
}

function qemuCheckClean(folder: string): string[] {
  return readDescriptor(folder).chain.flatMap((delta) => {
    try {
      run('qemu-img', ['check', '-f', 'parallels', delta]);
      return [];
    } catch (error) {
      return [`qemu-img check ${delta}: ${String((error as { stdout?: string }).stdout ?? error)}`];
    }
  });
}

/** Everything a real consumer checks after one of our operations, and the content against `reference` (raw). */
async function judge(folder: string, reference: string, sizeBytes: number): Promise<void> {
  expect(await realPloopProblems(folder)).toEqual([]);
  expect(qemuCheckClean(folder)).toEqual([]);
  const virtual = JSON.parse(run('qemu-img', ['info', '-f', 'parallels', '--output=json', readDescriptor(folder).chain[0]!])) as { 'virtual-size': number };
  expect(virtual['virtual-size']).toBe(sizeBytes);
  const result = compare(reference, exportRaw(folder, join(folder, '..', `${Date.now()}-${Math.random()}.raw`)));
  expect(result.equal, result.output).toBe(true);
}

function copyOf(folder: string): string {
  const copy = fresh();
  cpSync(folder, copy, { recursive: true });
  return copy;
}

/** A raw reference of `sizeBytes`: the image's content cut or zero-extended. */
function referenceAt(folder: string, sizeBytes: number): string {
  const out = exportRaw(folder, join(fresh(), 'ref.raw'));
  run('truncate', ['-s', String(sizeBytes), out]);
  return out;
}

interface Spec {
  name: string;
  version: 1 | 2;
  clusterKiB: number;
  mode: 'expanded' | 'preallocated';
  sizeMiB: number;
}

const specs: Spec[] = [
  { name: 'v1 64K expanded', version: 1, clusterKiB: 64, mode: 'expanded', sizeMiB: 256 },
  { name: 'v2 1M expanded', version: 2, clusterKiB: 1024, mode: 'expanded', sizeMiB: 256 },
  { name: 'v2 64M expanded', version: 2, clusterKiB: 65536, mode: 'expanded', sizeMiB: 512 },
  { name: 'v1 1M preallocated', version: 1, clusterKiB: 1024, mode: 'preallocated', sizeMiB: 128 },
  { name: 'v2 64K preallocated', version: 2, clusterKiB: 64, mode: 'preallocated', sizeMiB: 128 },
];

/** `ploop init`, then data in the first half (patterns straddling clusters) and a little at the end. */
async function makeImage(spec: Spec): Promise<string> {
  const folder = fresh();
  await ploopOk(['init', '-s', `${spec.sizeMiB}M`, '-b', String(spec.clusterKiB * 2), '-f', spec.mode, '-v', String(spec.version), '-t', 'none', join(folder, 'root.hdd')]);
  const half = spec.sizeMiB / 2;
  await write(folder, 'write -P 0x5a 0 3M', `write -P 0xa5 ${half / 2}M 5M`, `write -P 0x3c ${half - 2}M 1536k`);
  expect(await realPloopProblems(folder)).toEqual([]);
  return folder;
}

describe.each(specs)('real ploop image $name', (spec) => {
  let base: string;
  beforeAll(async () => {
    base = await makeImage(spec);
  });

  test('grow, then shrink without --resize_partition (refused where every cluster holds data); real ploop grows the result offline too', async () => {
    const folder = copyOf(base);
    const bigger = spec.sizeMiB * 2;
    const grown = await cli('resize', '--hdd', folder, '--size', `${bigger}M`);
    expect(grown.status, grown.stderr).toBe(0);
    await judge(folder, referenceAt(base, bigger * MiB), bigger * MiB);

    const smaller = spec.sizeMiB / 2;
    const top = readDescriptor(folder).chain[0]!;
    const bytesBefore = readFileSync(top);
    const shrunk = await cli('resize', '--hdd', folder, '--size', `${smaller}M`);
    if (spec.mode === 'preallocated') {
      // Every cluster is allocated and no filesystem proves any of them free: the brief's "resize never cuts data".
      expect(shrunk.status, shrunk.stderr).toBe(8);
      expect(shrunk.stderr).toMatch(/resize never cuts data/);
      expect(readFileSync(top).equals(bytesBefore)).toBe(true);
      await judge(folder, referenceAt(base, bigger * MiB), bigger * MiB);
    } else {
      expect(shrunk.status, shrunk.stderr).toBe(0);
      await judge(folder, referenceAt(base, smaller * MiB), smaller * MiB);
    }

    // ploop's own offline grow refused our images while we closed them with in-use "v2.1".
    const theirs = copyOf(folder);
    await ploopGrowOffline(theirs, `${bigger * 2}M`);
    expect(await realPloopProblems(theirs)).toEqual([]);
  });

  test('convert both ways', async () => {
    const folder = copyOf(base);
    const reference = referenceAt(base, spec.sizeMiB * MiB);
    const [first, second] = spec.mode === 'expanded' ? ['--plain', '--expanding'] : ['--expanding', '--plain'];
    for (const target of [first!, second!]) {
      const converted = await cli('convert', '--hdd', folder, target);
      expect(converted.status, converted.stderr).toBe(0);
      await judge(folder, reference, spec.sizeMiB * MiB);
      expect(readDescriptor(folder).preallocated).toBe(target === '--plain');
    }
  });

  test('merge of two snapshots equals ploop snapshot-merge of a copy', async () => {
    const folder = copyOf(base);
    const descriptor = join(folder, 'DiskDescriptor.xml');
    await ploopOk(['snapshot', descriptor]);
    await write(folder, `write -P 0x11 1M 2M`, `write -P 0x22 ${spec.sizeMiB - 1}M 512k`);
    await ploopOk(['snapshot', descriptor]);
    await write(folder, `write -P 0x33 2560k 3M`);
    expect(readDescriptor(folder).chain).toHaveLength(3);
    const before = exportRaw(folder, join(fresh(), 'chain.raw'));

    const theirs = copyOf(folder);
    await ploopOk(['snapshot-merge', '-A', join(theirs, 'DiskDescriptor.xml')]);
    expect(readDescriptor(theirs).chain).toHaveLength(1);

    const merged = await cli('merge', '--hdd', folder);
    expect(merged.status, merged.stderr).toBe(0);
    expect(readDescriptor(folder).chain).toHaveLength(1);
    await judge(folder, before, spec.sizeMiB * MiB);
    const ours = exportRaw(folder, join(fresh(), 'ours.raw'));
    const result = compare(ours, exportRaw(theirs, join(fresh(), 'theirs.raw')));
    expect(result.equal, result.output).toBe(true);
  });
});

describe('what real ploop refuses, we refuse in its words', () => {
  test('a <Temporary/> top delta: ploop refuses to read it, we exit 7 with one sentence', async () => {
    const folder = fresh();
    await ploopOk(['init', '-s', '64M', '-v', '2', '-t', 'none', join(folder, 'root.hdd')]);
    await ploopOk(['snapshot', join(folder, 'DiskDescriptor.xml')]);
    const path = join(folder, 'DiskDescriptor.xml');
    const top = readDescriptor(folder);
    const xml = readFileSync(path, 'utf8');
    const guid = /<TopGUID>([^<]+)<\/TopGUID>/.exec(xml)![1]!;
    const shot = xml.lastIndexOf('<Shot>', xml.indexOf(`<GUID>${guid}</GUID>`, xml.indexOf('<Snapshots>')));
    writeFileSync(path, `${xml.slice(0, shot)}<Shot>\n      <Temporary/>${xml.slice(shot + '<Shot>'.length)}`);
    expect(readFileSync(path, 'utf8')).toContain('<Temporary/>');
    const list = await ploop(['snapshot-list', path]);
    expect(list.exitCode).not.toBe(0);
    const before = readFileSync(top.chain[0]!);
    const grown = await cli('resize', '--hdd', folder, '--size', '128M');
    expect(grown.status).toBe(7);
    expect(grown.stderr.trim().split('\n')).toHaveLength(1);
    expect(grown.stderr).toMatch(/marked <Temporary\/>, which ploop itself refuses/);
    expect(readFileSync(top.chain[0]!).equals(before)).toBe(true);
  });

  test('a raw (Type Plain) image: exit 7 "not supported", not a qemu-img probe error', async () => {
    const folder = fresh();
    await ploopOk(['init', '-s', '64M', '-f', 'raw', '-t', 'none', join(folder, 'root.hdd')]);
    expect(readFileSync(join(folder, 'DiskDescriptor.xml'), 'utf8')).toContain('<Type>Plain</Type>');
    for (const args of [['resize', '--hdd', folder, '--size', '128M'], ['resize', '--hdd', folder, '--info'], ['compact', '--hdd', folder]]) {
      const result = await cli(...args);
      expect(result.status, result.stderr).toBe(7);
      expect(result.stderr).toMatch(/raw image \(Type Plain\), which this tool does not support/);
      expect(result.stderr).not.toMatch(/qemu-img|parallels image/);
    }
  });

  test('a v1 delta with first-block offset 0: ploop check refuses it and so do we, naming ploop\'s rule', async () => {
    const folder = fresh();
    await ploopOk(['init', '-s', '64M', '-v', '1', '-t', 'none', join(folder, 'root.hdd')]);
    const delta = readDescriptor(folder).chain[0]!;
    const fd = openSync(delta, 'r+');
    writeSync(fd, Buffer.alloc(4), 0, 4, 48);
    closeSync(fd);
    expect((await ploop(['check', '-r', '-f', delta])).exitCode).not.toBe(0);
    const result = await cli('resize', '--hdd', folder, '--size', '128M');
    expect(result.status).toBe(4);
    expect(result.stderr).toMatch(/ploop requires a non-zero offset that is a multiple of the cluster size/);
    expect(result.stderr).not.toMatch(/not aligned/);
  });
});

describe('compact and --info on a real ploop image with an ext4 filesystem (one appliance each)', () => {
  let folder: string;
  let reference: string;
  beforeAll(async () => {
    folder = fresh();
    await ploopOk(['init', '-s', '256M', '-v', '2', '-t', 'none', join(folder, 'root.hdd')]);
    const work = fresh();
    const files = join(work, 'files');
    mkdirSync(files);
    for (let i = 0; i < 8; i++) writeFileSync(join(files, `f${i}`), Buffer.alloc(2 * MiB, i + 1));
    const raw = join(work, 'disk.raw');
    run('truncate', ['-s', '256M', raw]);
    run('mkfs.ext4', ['-q', '-F', '-d', files, raw]);
    // Every cluster written, zeros included (no --target-is-zero): compact then has free clusters to drop.
    run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'parallels', raw, readDescriptor(folder).chain[0]!]);
    await settle(readDescriptor(folder).chain[0]!);
    reference = raw;
    expect(await realPloopProblems(folder)).toEqual([]);
  });

  test('compact frees clusters and real ploop still accepts the image', async () => {
    const before = readDescriptor(folder).chain[0]!;
    const sizeBefore = Number(run('stat', ['-c', '%s', before]).trim());
    const compacted = await cli('compact', '--hdd', folder);
    expect(compacted.status, compacted.stderr).toBe(0);
    expect(Number(run('stat', ['-c', '%s', before]).trim())).toBeLessThan(sizeBefore);
    await judge(folder, reference, 256 * MiB);
  });

  test('resize --info reads it and changes nothing real ploop would notice', async () => {
    const info = await cli('resize', '--hdd', folder, '--info');
    expect(info.status, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/Size:\s+256M/);
    await judge(folder, reference, 256 * MiB);
  });
});
