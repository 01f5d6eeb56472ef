// v1 ploop deltas ("WithoutFreeSpace": BAT entries are sector offsets, not cluster indices) through grow past the
// first BAT cluster (data clusters move), shrink, convert --plain and --expanding (issue 17 item 3). The delta is made by qemu-img (v2, 64 KiB clusters so that a grow to 2 GiB
// needs more BAT clusters) and turned into v1 here: signature, and each entry multiplied by the cluster size in
// sectors; qemu reads both versions, so after every step qemu-img compare against a raw reference and qemu-img
// check judge the content and the table, and real ploop (1.15) checks the delta. No appliance.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { ROOT_PARENT, TOP_GUID, descriptorXml, readDeltaTable, type DeltaTable } from '../helpers/ploop.js';
import { assertRealPloopAccepts } from '../helpers/real-ploop.js';

const { fresh: freshDir } = caseFolders('prl-ploop-v1-');
const CLUSTER_SECTORS = 128; // 64 KiB
const SIGNATURE_V1 = 'WithoutFreeSpace';

/** Rewrites a qemu-made v2 delta as v1: the signature, and every BAT entry from a cluster index to a sector offset. */
function makeV1(file: string): void {
  const before = readDeltaTable(file);
  const fd = openSync(file, 'r+');
  try {
    // The whole header-and-BAT area is written: qemu leaves its tail a hole, which real ploop refuses ("sparse").
    const area = Buffer.alloc(before.dataOffsetSectors * 512);
    readSync(fd, area, 0, 64, 0);
    area.write(SIGNATURE_V1, 0, 'latin1');
    before.bat.forEach((entry, i) => area.writeUInt32LE(entry * before.clusterSectors, 64 + 4 * i));
    writeSync(fd, area, 0, area.length, 0);
  } finally {
    closeSync(fd);
  }
}

/** v1's rules, read independently of src/: data_off non-zero and cluster-aligned, every entry a sector offset of a cluster in the data area. */
function expectV1(file: string, sizeMiB: number): DeltaTable {
  const delta = readDeltaTable(file);
  expect(delta.magic).toBe(SIGNATURE_V1);
  expect(delta.clusterSectors).toBe(CLUSTER_SECTORS);
  expect(delta.sizeSectors).toBe(sizeMiB * 2048);
  expect(delta.dataOffsetSectors).toBeGreaterThan(0);
  expect(delta.dataOffsetSectors % CLUSTER_SECTORS).toBe(0);
  const used = delta.bat.filter((entry) => entry !== 0);
  for (const entry of used) {
    expect(entry % CLUSTER_SECTORS, `BAT entry ${entry} is not a cluster's sector offset`).toBe(0);
    expect(entry).toBeGreaterThanOrEqual(delta.dataOffsetSectors);
  }
  expect(new Set(used).size, 'two BAT entries share a cluster').toBe(used.length);
  return delta;
}

function expectContent(reference: string, file: string): void {
  const compare = spawnSync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'parallels', reference, file], { encoding: 'utf8' });
  expect(compare.status, `qemu-img compare: ${compare.stdout}${compare.stderr}`).toBe(0);
  const check = spawnSync('qemu-img', ['check', '-U', '-f', 'parallels', file], { encoding: 'utf8' });
  expect(check.status, `qemu-img check: ${check.stdout}${check.stderr}`).toBe(0);
}

function writeDescriptor(dir: string, sizeMiB: number, preallocated = false): void {
  writeFileSync(
    join(dir, 'DiskDescriptor.xml'),
    descriptorXml({ sizeSectors: sizeMiB * 2048, blockSizeSectors: CLUSTER_SECTORS, preallocated, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }),
  );
}

async function step(dir: string, ...args: string[]): Promise<void> {
  const result = await cli(...args, '--hdd', dir, '--json');
  expect(result.status, `${args.join(' ')}: ${result.stderr}`).toBe(0);
  expect(result.json!.unchanged ?? false, `${args.join(' ')} did nothing`).toBe(false);
}

/** A 64 MiB v1 delta in its folder with data, written zero bytes (4 MiB) and holes, and a raw reference beside the folder. */
async function buildV1(): Promise<{ dir: string; delta: string; reference: string; made: DeltaTable }> {
  const root = freshDir();
  const dir = join(root, 'vm');
  mkdirSync(dir);
  const delta = join(dir, 'root.hds');
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64K', delta, '64M']);
  const data = ['write -P 0x5a 0 3M', 'write -P 0 8M 4M', 'write -P 0x3c 40M 1M', 'write -P 0x71 47M 64K'];
  execFileSync('qemu-io', ['-f', 'parallels', ...data.flatMap((c) => ['-c', c]), delta], { stdio: 'ignore' });
  const reference = join(root, 'reference.raw');
  execFileSync('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', delta, reference]);
  makeV1(delta);
  writeDescriptor(dir, 64);
  const made = expectV1(delta, 64);
  expect(made.bat.filter((entry) => entry !== 0)).toHaveLength((3 + 4 + 1) * 16 + 1);
  expectContent(reference, delta); // the v1 rewrite itself is right
  await assertRealPloopAccepts(dir);
  return { dir, delta, reference, made };
}

// One case per operation, each from a fresh delta, so that a wrong v1 entry is caught in every one of them.
describe('v1 ploop deltas through the operations', () => {
  it('grow past the first BAT cluster (the data area moves), then shrink', async () => {
    const { dir, delta, reference, made } = await buildV1();
    // 2 GiB of 64 KiB clusters: 32768 entries, 128 KiB of BAT, so the data area moves up by two clusters.
    await step(dir, 'resize', '--size', '2G');
    const grown = expectV1(delta, 2048);
    expect(grown.dataOffsetSectors).toBeGreaterThan(made.dataOffsetSectors);
    expectContent(reference, delta);
    await assertRealPloopAccepts(dir);

    await step(dir, 'resize', '--size', '48M');
    expectV1(delta, 48);
    expectContent(reference, delta);
    await assertRealPloopAccepts(dir);
  });

  // resize never cuts allocated clusters and does not move them on a shrink, so this case writes no non-zero
  // entry: it shows v1 survives, but a wrong entry unit cannot turn it red (the other three cases catch that).
  it('shrink (nothing allocated past the new end)', async () => {
    const { dir, delta, reference } = await buildV1();
    await step(dir, 'resize', '--size', '48M');
    expectV1(delta, 48);
    expectContent(reference, delta);
    await assertRealPloopAccepts(dir);
  });

  it('convert --plain allocates every cluster', async () => {
    const { dir, delta, reference } = await buildV1();
    await step(dir, 'convert', '--plain');
    const plain = expectV1(delta, 64);
    expect(plain.bat.every((entry) => entry !== 0)).toBe(true);
    expectContent(reference, delta);
    await assertRealPloopAccepts(dir);
  });

  it('convert --expanding releases the written zeros', async () => {
    const { dir, delta, reference, made } = await buildV1();
    writeDescriptor(dir, 64, true);
    await step(dir, 'convert', '--expanding');
    const expanding = expectV1(delta, 64);
    expect(expanding.bat.filter((entry) => entry !== 0).length).toBeLessThan(made.bat.filter((entry) => entry !== 0).length);
    expectContent(reference, delta);
    await assertRealPloopAccepts(dir);
  });
});
