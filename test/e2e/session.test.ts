// The image session's promises that need no appliance: a running container's image (named by a ploop device in
// sysfs, or held open for writing by a process) is never changed nor "recovered"; a dry run plans from the state
// the real run starts from, recovery included, and runs the same checks. Randomized cases print their seed.
import { describe, expect, it } from 'vitest';
import { seededInts } from '../helpers/random.js';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, openSync, closeSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { descriptorXml, IN_USE_OPEN, readDeltaTable, TOP_GUID, ROOT_PARENT } from '../helpers/ploop.js';
import { qemuImg, qemuIo, sums } from '../helpers/images.js';

const { root, fresh } = caseFolders('prl-session-');
/** m_DiskInUse's offset in the delta header (ploop1_image.h). */
const IN_USE_OFFSET = 44;

function ploopFolder(sizeMiB: number, deltaMiB = sizeMiB): { dir: string; delta: string } {
  const dir = fresh();
  const delta = join(dir, 'root.hds');
  qemuImg('create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, `${deltaMiB}M`);
  const shots = [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }];
  writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: sizeMiB * 2048, blockSizeSectors: 2048, shots }));
  // ploop's own tools leave the lock file behind; with it present, a refusal must leave the folder byte-identical.
  writeFileSync(join(dir, 'DiskDescriptor.xml.lck'), '');
  return { dir, delta };
}

function markInUse(delta: string): void {
  const fd = openSync(delta, 'r+');
  const mark = Buffer.alloc(4);
  mark.writeUInt32LE(IN_USE_OPEN);
  writeSync(fd, mark, 0, 4, IN_USE_OFFSET);
  closeSync(fd);
}

/** A fake /sys with one ploop device whose top delta is `delta` (what the ploop module shows for a mounted image). */
function fakeSysfs(delta: string): string {
  const sys = join(root, `sys-${Math.random().toString(16).slice(2)}`);
  mkdirSync(join(sys, 'block', 'ploop27015', 'pdelta', '0'), { recursive: true });
  writeFileSync(join(sys, 'block', 'ploop27015', 'pdelta', '0', 'image'), `${delta}\n`);
  return sys;
}

describe('a running container image is never written', () => {
  it('a ploop device naming the delta: every modifying command refuses, the in-use mark stays, --info warns', async () => {
    const { dir, delta } = ploopFolder(64);
    markInUse(delta);
    const env = { PRL_DISK_TOOL_SYSFS: fakeSysfs(delta) };
    const before = sums(dir);
    for (const args of [['resize', '--size', '128M'], ['resize', '--size', '32M'], ['convert', '--plain'], ['merge'], ['compact'], ['resize', '--size', '128M', '-n']]) {
      const result = await runCli([args[0]!, '--hdd', dir, ...args.slice(1)], env);
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(6);
      expect(result.stderr).toMatch(/mounted by the kernel as \/dev\/ploop27015 \(a running container\); stop the container/);
      expect(sums(dir)).toEqual(before);
    }
    expect(readDeltaTable(delta).inUse).toBe(IN_USE_OPEN);
  });

  it('a process holding the delta open for writing: refused, and the mark is not taken for crash debris', async () => {
    const { dir, delta } = ploopFolder(64);
    markInUse(delta);
    const holder = spawn('bash', ['-c', `exec 3<>"${delta}"; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise((resolve) => holder.stdout!.once('data', resolve));
      const before = sums(dir);
      const result = await runCli(['resize', '--hdd', dir, '--size', '128M']);
      expect(result.code, result.stderr).toBe(6);
      expect(result.stderr).toMatch(new RegExp(`open for writing by process ${holder.pid} \\(sleep\\)`));
      expect(sums(dir)).toEqual(before);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('with neither holder, the mark is an interrupted run\'s and the change completes it', async () => {
    const { dir, delta } = ploopFolder(64);
    markInUse(delta);
    const result = await runCli(['resize', '--hdd', dir, '--size', '128M']);
    expect(result.code, result.stderr).toBe(0);
    expect(readDeltaTable(delta).inUse).not.toBe(IN_USE_OPEN);
  });
});

describe('a dry run is the real run', () => {
  it('descriptor 32 MiB, delta 64 MiB with data at 40 MiB: -n plans from 64 MiB, shows the recovery, refuses what the real run refuses', async () => {
    const { dir, delta } = ploopFolder(32, 64);
    execQemuIoParallels(delta, 'write -P 0x77 40M 1M');
    const before = sums(dir);
    const dryCut = await runCli(['resize', '--hdd', dir, '--size', '36M', '-n']);
    expect(dryCut.code, dryCut.stderr).toBe(8);
    expect(dryCut.stderr).toMatch(/The smallest size it accepts is 41M/);
    const dry = await runCli(['resize', '--hdd', dir, '--size', '48M', '-n', '--json']);
    const report = JSON.parse(dry.stdout.trim().split('\n').pop()!) as { plan: string[]; steps: string[] };
    expect(report.plan[0]).toMatch(/^Complete an interrupted operation first: the descriptor's Disk_size of 65536 sectors differs from the top delta's 131072/);
    expect(report.steps).toEqual(['Shrink the image from 64 MiB to 48 MiB.']);
    expect(sums(dir)).toEqual(before);
    const realCut = await runCli(['resize', '--hdd', dir, '--size', '36M']);
    expect(realCut.code, realCut.stderr).toBe(8);
    const real = await runCli(['resize', '--hdd', dir, '--size', '48M', '--json']);
    expect(real.code, real.stderr).toBe(0);
    expect((JSON.parse(real.stdout.trim().split('\n').pop()!) as { steps: string[] }).steps).toEqual(report.steps);
  });

  it('a ploop dry run lists the engine\'s own steps under the size change', async () => {
    const { dir } = ploopFolder(64);
    const dry = await runCli(['resize', '--hdd', dir, '--size', '2T', '-n']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/1\. Grow the image from 64 MiB to 2 TiB[^\n]*\n\s+a\. Mark the top delta in use\.\n/);
    expect(dry.stdout).toMatch(/\. Write the new header: 4294967296 sectors, 2097152 BAT entries/);
    expect(dry.stdout).toMatch(/\. Set Disk_size and End in DiskDescriptor\.xml to 4294967296 sectors\./);
  });

  it('a qcow2 resize that stopped while committing: -n says the commit is completed first, and changes nothing', async () => {
    const dir = fresh();
    const file = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', file, '32M');
    // What a resize killed amid its commit leaves: its overlay under the commit name (src/commands/resize/overlay.ts).
    qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', file, join(dir, '.d.qcow2.resize-commit.prl-tmp'), '32M');
    const before = sums(dir);
    const dry = await runCli(['resize', '--hdd', file, '--size', '48M', '-n']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/Complete an interrupted operation first: an earlier resize stopped while committing .*\.d\.qcow2\.resize-commit\.prl-tmp; that commit is completed\./);
    expect(sums(dir)).toEqual(before);
  });

  it('free space: -n refuses a grow the real run would refuse (exit 9)', async () => {
    const dir = fresh();
    const file = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=falloc', file, '16M');
    const dry = await runCli(['resize', '--hdd', file, '--size', '60T', '-n']);
    const real = await runCli(['resize', '--hdd', file, '--size', '60T']);
    expect(real.code, real.stderr).toBe(9);
    expect(dry.code, dry.stderr).toBe(9);
  });

  it('randomized images: the real run does what the dry run planned, and refuses what it refused', async () => {
    const seed = Number(process.env.PRL_TEST_SEED ?? 20261130);
    console.log(`dry-run property seed ${seed} (PRL_TEST_SEED overrides)`);
    const next = seededInts(seed);
    for (let round = 0; round < 12; round++) {
      const format = next(2) === 0 ? 'qcow2' : 'ploop';
      const sizeMiB = 16 + next(48);
      const dataAtMiB = next(sizeMiB);
      const targetMiB = 1 + next(2 * sizeMiB);
      let hdd: string;
      if (format === 'qcow2') {
        hdd = join(fresh(), 'd.qcow2');
        qemuImg('create', '-q', '-f', 'qcow2', hdd, `${sizeMiB}M`);
        qemuIo(hdd, `write -P 0x5a ${dataAtMiB}M 64k`);
      } else {
        const made = ploopFolder(sizeMiB);
        execQemuIoParallels(made.delta, `write -P 0x5a ${dataAtMiB}M 64k`);
        hdd = made.dir;
      }
      const label = `seed ${seed} round ${round}: ${format} ${sizeMiB} MiB, data at ${dataAtMiB} MiB, to ${targetMiB} MiB`;
      const dry = await runCli(['resize', '--hdd', hdd, '--size', `${targetMiB}M`, '-n', '--json']);
      const real = await runCli(['resize', '--hdd', hdd, '--size', `${targetMiB}M`, '--json']);
      expect(real.code, `${label}: ${real.stderr}`).toBe(dry.code);
      if (real.code !== 0) continue;
      const steps = (out: string): unknown => (JSON.parse(out.trim().split('\n').pop()!) as { steps: unknown }).steps;
      expect(Array.isArray(steps(dry.stdout)), label).toBe(true);
      expect(steps(real.stdout), label).toEqual(steps(dry.stdout));
    }
  });
});

function execQemuIoParallels(delta: string, command: string): void {
  const result = spawnSync('qemu-io', ['-f', 'parallels', '-c', command, delta], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`qemu-io ${command} on ${delta}: ${result.stderr}`);
}
