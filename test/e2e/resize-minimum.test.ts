// No shrink cuts data the tool does not recognise (issue 14): disks without a table and with unknown content,
// holding data at several offsets (qcow2, ploop, a qcow2 over a backing file whose data lies past the new end).
// Every shrink below the data is refused naming the smallest safe size, resize --info's Minimum is that size, and
// a shrink to it keeps every byte (qemu-img compare). Also: a plain qcow2 is told from a full sparse one, and a
// failed rollback says what state the image is in. No appliance is started.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseFolders } from '../helpers/dirs.js';
import { runCli } from '../helpers/cli.js';
import { allocated, sums } from '../helpers/images.js';
import { TOP_GUID, chainDescriptorXml } from '../helpers/ploop.js';
import { MiB, info, resize } from './resize-support.js';
import { readDiskFacts } from '../../src/commands/resize/facts.js';
import { executeResize } from '../../src/commands/resize/execute.js';
import type { ResizePlan } from '../../src/commands/resize/plan.js';
import { loadImage } from '../../src/formats/image.js';
import { closePloopImage, openPloopImage } from '../../src/formats/ploop/image.js';

const { fresh } = caseFolders('prl-resize-minimum-');
const KiB = 1024;

function qcow2(dir: string, name: string, sizeMiB: number, writes: string[], backing?: string): string {
  const file = join(dir, name);
  const args = ['create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), file, `${sizeMiB}M`];
  execFileSync('qemu-img', args);
  if (writes.length > 0) execFileSync('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), file], { stdio: 'ignore' });
  return file;
}

function ploop(dir: string, sizeMiB: number, writes: string[]): { folder: string; delta: string } {
  const folder = join(dir, 'ct');
  mkdirSync(folder);
  const delta = join(folder, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, `${sizeMiB}M`]);
  execFileSync('qemu-io', ['-f', 'parallels', ...writes.flatMap((w) => ['-c', w]), delta], { stdio: 'ignore' });
  writeFileSync(join(folder, 'DiskDescriptor.xml'), chainDescriptorXml(sizeMiB, ['root.hds'], [TOP_GUID]));
  return { folder, delta };
}

/** A raw copy of what the guest sees, as the reference for the kept range. */
function rawCopy(file: string, format: 'qcow2' | 'parallels', dir: string): string {
  const raw = join(dir, 'reference.raw');
  execFileSync('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', file, raw]);
  return raw;
}

/** The first `bytes` of the reference equal the image, which is exactly that long. */
function keptIdentical(reference: string, file: string, format: 'qcow2' | 'parallels', bytes: number): void {
  const kept = `${reference}.kept`;
  copyFileSync(reference, kept);
  truncateSync(kept, bytes);
  const compare = spawnSync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', format, kept, file], { encoding: 'utf8' });
  expect(compare.status, compare.stdout + compare.stderr).toBe(0);
  const virtual = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', '-f', format, file], { encoding: 'utf8' }) as string) as { 'virtual-size': number };
  expect(virtual['virtual-size']).toBe(bytes);
}

/**
 * The whole contract on one image: Minimum, refusals below it (naming it, changing nothing), with and without
 * --resize_partition, exactly the smallest size accepted and one unit below refused, and the data kept.
 */
async function expectNoCut(hdd: string, files: string, data: { file: string; format: 'qcow2' | 'parallels' }, cases: { below: string[]; smallest: string; smallestBytes: number; named: RegExp; minimumBytes: number }): Promise<void> {
  mkdirSync(`${files}-ref`);
  const reference = rawCopy(data.file, data.format, `${files}-ref`);
  const limits = await info(hdd);
  expect([limits.minimum, limits.minimumKeepLastPartition]).toEqual([cases.minimumBytes, cases.minimumBytes]);
  const before = sums(files);
  for (const size of cases.below) {
    for (const extra of [[], ['--resize_partition']]) {
      const refused = await resize(hdd, size, ...extra);
      expect(refused.code, `${size} ${extra.join(' ')}: ${refused.stdout}`).toBe(8);
      expect(refused.stderr).toMatch(cases.named);
      expect(sums(files)).toEqual(before);
    }
  }
  const shrunk = await resize(hdd, cases.smallest);
  expect(shrunk.code, shrunk.stderr).toBe(0);
  keptIdentical(reference, data.file, data.format, cases.smallestBytes);
}

describe('unknown content is data', () => {
  it('qcow2 without a table, 1 MiB at 40 MiB (the issue): 32M refused, Minimum 41M, 41M keeps it', async () => {
    const dir = fresh();
    const file = qcow2(dir, 'a.qcow2', 64, ['write -P 0x77 40M 1M']);
    await expectNoCut(file, dir, { file, format: 'qcow2' }, {
      below: ['32M', '40M', '41983K'],
      smallest: '41M',
      smallestBytes: 41 * MiB,
      named: /holds data up to 41 MiB .*The smallest size it accepts is 41M;/,
      minimumBytes: 41 * MiB,
    });
  });

  it('qcow2 without a table, data at several offsets, the last ending inside a MiB: exact size accepted, 1K below refused', async () => {
    const dir = fresh();
    const file = qcow2(dir, 'a.qcow2', 64, ['write -P 0x11 0 4K', 'write -P 0x22 10M 64K', 'write -P 0x33 40M 4K', `write -P 0x44 ${40 * MiB + 192 * KiB} 4K`]);
    await expectNoCut(file, dir, { file, format: 'qcow2' }, {
      below: ['16M', '40M', '41215K'],
      smallest: '41216K',
      smallestBytes: 41216 * KiB,
      named: /holds data up to 40\.3 MiB .*The smallest size it accepts is 41216K \(resize --info rounds it up to 41M\)/,
      minimumBytes: 41 * MiB,
    });
  });

  it('ploop without a table, data at several offsets: Minimum is the last allocated cluster, 1K below refused', async () => {
    const dir = fresh();
    const { folder, delta } = ploop(dir, 64, ['write -P 0x11 0 4K', 'write -P 0x22 10M 64K', `write -P 0x33 ${40 * MiB + 512 * KiB} 4K`]);
    await expectNoCut(folder, folder, { file: delta, format: 'parallels' }, {
      below: ['32M', '40M', '41983K'],
      smallest: '41M',
      smallestBytes: 41 * MiB,
      named: /holds data up to 41 MiB .*The smallest size it accepts is 41M;/,
      minimumBytes: 41 * MiB,
    });
  });

  it('qcow2 over a backing file whose data lies past the new end: refused, then kept; the base untouched', async () => {
    const dir = fresh();
    qcow2(dir, 'base.qcow2', 64, ['write -P 0x55 40M 1M']);
    const top = qcow2(dir, 'top.qcow2', 64, ['write -P 0x66 5M 64K'], 'base.qcow2');
    const baseSums = sums(dir)['base.qcow2'];
    await expectNoCut(top, dir, { file: top, format: 'qcow2' }, {
      below: ['32M', '40M'],
      smallest: '41M',
      smallestBytes: 41 * MiB,
      named: /holds data up to 41 MiB .*The smallest size it accepts is 41M;/,
      minimumBytes: 41 * MiB,
    });
    expect(sums(dir)['base.qcow2']).toBe(baseSums);
  });

  it('an MBR disk with unknown content: the partition is kept, data outside every partition is free', async () => {
    const dir = fresh();
    const raw = join(dir, 'disk.raw');
    writeFileSync(raw, '');
    truncateSync(raw, 64 * MiB);
    execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', raw], { input: 'label: dos\nstart=2048, size=38912, type=83\n' });
    const file = join(dir, 'a.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, file]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 1M 64K', '-c', 'write -P 0x78 19M 64K', '-c', 'write -P 0x79 40M 1M', file], { stdio: 'ignore' });
    const limits = await info(file);
    expect([limits.minimum, limits.minimumKeepLastPartition]).toEqual([20 * MiB, 20 * MiB]);
    const reference = rawCopy(file, 'qcow2', dir);
    const refused = await resize(file, '19M');
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(/partition 1 ends at 20 MiB.*The smallest size it accepts is 20M/);
    const shrunk = await resize(file, '20M');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    keptIdentical(reference, file, 'qcow2', 20 * MiB);
  });
});

describe('the last guard before the cut', () => {
  it('refuses a planner bug: a plan that cuts allocated data is stopped right before qemu-img resize --shrink / the ploop truncate', async () => {
    const dir = fresh();
    const file = qcow2(dir, 'a.qcow2', 64, ['write -P 0x77 40M 1M']);
    const { folder } = ploop(fresh(), 64, ['write -P 0x77 40M 1M']);
    const context = { progress: { step: () => {}, update: () => {}, done: () => {} }, notice: () => {} };
    const refs = [
      { format: 'qcow2', path: file, lockPath: file },
      { format: 'ploop', folder, descriptorPath: join(folder, 'DiskDescriptor.xml'), lockPath: join(folder, 'DiskDescriptor.xml.lck') },
    ] as const;
    for (const ref of refs) {
      const handle = ref.format === 'ploop' ? openPloopImage(ref.folder, { write: true }) : undefined;
      const facts = await readDiskFacts(await loadImage(ref, handle));
      const before = sums(ref.format === 'qcow2' ? dir : folder);
      // What a planner bug would produce: a bare shrink below the data.
      const plan: ResizePlan = { summary: '', steps: [{ kind: 'shrink-image', fromBytes: 64 * MiB, toBytes: 32 * MiB }], fromBytes: 64 * MiB, toBytes: 32 * MiB, advice: [], warnings: [], usesOverlay: false };
      await expect(executeResize(plan, facts, {}, context)).rejects.toThrow(/holds data up to 41 MiB .*the image was not shrunk\. The smallest safe size is 41M\./);
      expect(sums(ref.format === 'qcow2' ? dir : folder)).toEqual(before);
      if (handle) closePloopImage(handle);
    }
  });
});

describe('plain or expanding', () => {
  it('a sparse qcow2 its guest filled grows sparse; a preallocated one allocates the new space; the plan says which', async () => {
    const dir = fresh();
    const full = qcow2(dir, 'full.qcow2', 64, ['write -P 0x21 32M 32M', 'write -P 0x12 0 32M']);
    const planned = await resize(full, '192M', '-n');
    expect(planned.code, planned.stderr).toBe(0);
    expect(JSON.stringify(planned.json)).toMatch(/the image is expanding, so the new space takes host space only as the guest writes it/);
    const grown = await resize(full, '192M');
    expect(grown.code, grown.stderr).toBe(0);
    expect(allocated(full)).toBeLessThan(96 * MiB);

    const plain = join(dir, 'plain.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=falloc', plain, '64M']);
    const plainPlan = await resize(plain, '192M', '-n');
    expect(JSON.stringify(plainPlan.json)).toMatch(/the image is preallocated, so the new 128 MiB are allocated on the host now/);
    expect((await resize(plain, '192M')).code).toBe(0);
    expect(allocated(plain)).toBeGreaterThanOrEqual(192 * MiB);
  });
});

describe('a failed rollback', () => {
  it('says the image stays grown, that its data are as before, and the command that returns it', async () => {
    const dir = fresh();
    const raw = join(dir, 'disk.raw');
    writeFileSync(raw, '');
    truncateSync(raw, 64 * MiB);
    execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', raw], { input: 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' });
    const file = join(dir, 'a.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, file]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 1M 64K', file], { stdio: 'ignore' });
    const reference = rawCopy(file, 'qcow2', dir);
    // Fakes first on PATH: qemu-io fails every write (the table step on the overlay fails), qemu-img fails a
    // shrink (the rollback fails); everything else goes to the real tools.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const fake = (name: string, test: string): void => {
      writeFileSync(join(bin, name), `#!/bin/sh\nfor a in "$@"; do case "$a" in ${test}) echo "simulated ${name} failure" >&2; exit 1;; esac; done\nexec /usr/bin/${name} "$@"\n`);
      chmodSync(join(bin, name), 0o755);
    };
    fake('qemu-io', "'write -q'*");
    fake('qemu-img', '--shrink');
    const failed = await runCli(['resize', '--hdd', file, '--size', '128M', '--resize_partition'], { PATH: `${bin}:${process.env.PATH ?? ''}` });
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/Undoing the grow failed too \(.*\): the image stays 128 MiB instead of its former 64 MiB; its partitions and data are as before/);
    expect(failed.stderr).toContain(`run: prl_disk_tool resize --hdd "${file}" --size 64M`);
    const back = await resize(file, '64M');
    expect(back.code, back.stderr).toBe(0);
    keptIdentical(reference, file, 'qcow2', 64 * MiB);
  });
});
