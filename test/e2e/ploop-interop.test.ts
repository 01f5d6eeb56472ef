// The native ploop engine against QEMU's parallels driver and real ploop: QEMU reads what we write, we read what
// QEMU writes, qemu-img check stays clean, real ploop's strict check and snapshot-list accept every image the engine
// changed (its QEMU-made input settled first, as a VZ7 host does at mount: test/helpers/real-ploop-exec.ts), and a
// SIGKILL at any durable write leaves old or new content.
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, truncateSync, writeFileSync, mkdirSync, copyFileSync as copy } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ImageInvalid } from '../../src/util/errors.js';
import { closePloopImage, layoutOf, openPloopImage, readVirtual, recoverPloopImage } from '../../src/formats/ploop/image.js';
import { executeResize, planResize } from '../../src/formats/ploop/resize.js';
import { countBlocks, executeCompact, planCompact } from '../../src/formats/ploop/compact.js';
import { executeConvert, planConvert } from '../../src/formats/ploop/convert.js';
import { readDescriptor } from '../../src/formats/ploop/descriptor.js';
import {
  BASE_GUID,
  ROOT_PARENT,
  TOP_GUID,
  descriptorXml,
  makePloop,
  qemuCheck,
  qemuCreate,
  qemuImg,
  qemuIo,
  qemuReadRaw,
  removeDir,
  tempDir,
} from '../unit/ploop/fixtures.js';
import { realPloopProblems, settleFolder } from '../helpers/real-ploop.js';

const K = 1024;
const M = 1024 * K;
const G = 1024 * M;
const CLUSTER = 64 * K;
const VITE_NODE = resolve('node_modules/.bin/vite-node');
const CHILD = resolve('test/unit/ploop/crash-child.ts');

let root: string;
let n = 0;
beforeAll(() => {
  root = tempDir('ploop-e2e-');
});
afterAll(() => removeDir(root));

function freshDir(): string {
  const dir = join(root, `case-${n++}`);
  mkdirSync(dir);
  return dir;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function expectClean(delta: string): void {
  const r = qemuCheck(delta);
  expect(r.output).toContain('No errors were found on the image.');
  expect(r.status).toBe(0);
}

/** Real ploop's verdict on the folder the engine changed: nothing to report. */
async function expectRealPloopAccepts(dir: string): Promise<void> {
  expect(await realPloopProblems(dir)).toEqual([]);
}

/** qemu-img compare of the delta against a raw file holding the expected content. */
function expectContent(delta: string, expectedRaw: string): void {
  const r = spawnSync('qemu-img', ['compare', '-f', 'parallels', '-F', 'raw', delta, expectedRaw], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  expect(`${r.stdout}${r.stderr}`).toContain('Images are identical.');
}

function saveRaw(delta: string, dir: string, name: string): string {
  const path = join(dir, name);
  qemuImg(['convert', '-f', 'parallels', '-O', 'raw', delta, path]);
  return path;
}

const PATTERN = ['write -P 0x11 0 64k', 'write -P 0x22 128k 192k', 'write -P 0x33 1M 64k', 'write -P 0x44 20M 128k', 'write -P 0x55 60M 64k'];

describe('reading', () => {
  test('a qemu-img create + qemu-io image reads byte-identical to QEMU', () => {
    const dir = freshDir();
    const delta = makePloop(dir, 32 * M, CLUSTER, PATTERN.slice(0, 4));
    const image = openPloopImage(dir);
    try {
      expect(sha(readVirtual(image, 0, 32 * M))).toBe(sha(qemuReadRaw(delta, dir)));
      expect(image.pendingRecovery).toEqual([]);
    } finally {
      closePloopImage(image);
    }
  });

  test('a qemu-img convert -O parallels image reads byte-identical to QEMU', () => {
    const dir = freshDir();
    const raw = join(dir, 'src.raw');
    const data = Buffer.alloc(8 * M);
    let seed = 12345;
    for (let i = 0; i < data.length; i += 4096) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      if (seed % 3 === 0) data.fill(seed & 0xff, i, i + 4096);
    }
    writeFileSync(raw, data);
    qemuImg(['convert', '-f', 'raw', '-O', 'parallels', '-o', `cluster_size=${CLUSTER}`, raw, join(dir, 'root.hds')]);
    writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: (8 * M) / 512, blockSizeSectors: CLUSTER / 512, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }));
    const image = openPloopImage(dir);
    try {
      expect(sha(readVirtual(image, 0, 8 * M))).toBe(sha(data));
    } finally {
      closePloopImage(image);
    }
  });

  test('a two-delta chain reads the top over the base', () => {
    const dir = freshDir();
    qemuCreate(join(dir, 'root.hds'), 4 * M, CLUSTER);
    qemuIo(join(dir, 'root.hds'), ['write -P 0xaa 0 256k']);
    qemuCreate(join(dir, 'top.hds'), 4 * M, CLUSTER);
    qemuIo(join(dir, 'top.hds'), ['write -P 0xbb 64k 64k']);
    writeFileSync(
      join(dir, 'DiskDescriptor.xml'),
      descriptorXml({ sizeSectors: (4 * M) / 512, blockSizeSectors: CLUSTER / 512, shots: [{ guid: TOP_GUID, file: 'top.hds', parent: BASE_GUID }, { guid: BASE_GUID, file: 'root.hds', parent: ROOT_PARENT }] }),
    );
    const image = openPloopImage(dir);
    try {
      expect(readVirtual(image, 0, 64 * K).every((b) => b === 0xaa)).toBe(true);
      expect(readVirtual(image, 64 * K, 64 * K).every((b) => b === 0xbb)).toBe(true);
      expect(readVirtual(image, 128 * K, 128 * K).every((b) => b === 0xaa)).toBe(true);
      expect(readVirtual(image, 256 * K, 64 * K).every((b) => b === 0)).toBe(true);
    } finally {
      closePloopImage(image);
    }
  });
});

function resize(dir: string, sizeBytes: number, preallocated = false): void {
  const image = openPloopImage(dir, { write: true });
  try {
    executeResize(image, planResize(layoutOf(image, 0), [], sizeBytes, { preallocated }));
  } finally {
    closePloopImage(image);
  }
}

describe('grow and shrink', () => {
  test('grow 64M → 3G relocates the clusters in the way of the longer BAT', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 64 * M, CLUSTER, PATTERN);
    settleFolder(dir);
    const expected = saveRaw(delta, dir, 'expected.raw');
    const image = openPloopImage(dir, { write: true });
    const plan = planResize(layoutOf(image, 0), [], 3 * G);
    expect(plan.steps.filter((s) => s.kind === 'move-cluster').length).toBeGreaterThan(0);
    executeResize(image, plan);
    closePloopImage(image);
    truncateSync(expected, 3 * G);
    expectClean(delta);
    expectContent(delta, expected);
    expect(readDescriptor(dir).diskSizeSectors).toBe((3 * G) / 512);
    const reopened = openPloopImage(dir);
    expect(reopened.pendingRecovery).toEqual([]);
    closePloopImage(reopened);
    await expectRealPloopAccepts(dir);
  });

  test('shrink 64M → 16M releases the clusters past the end and truncates the file', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 64 * M, CLUSTER, PATTERN);
    settleFolder(dir);
    const expected = saveRaw(delta, dir, 'expected.raw');
    const before = statSync(delta).size;
    resize(dir, 16 * M);
    truncateSync(expected, 16 * M);
    expectClean(delta);
    expectContent(delta, expected);
    expect(statSync(delta).size).toBe(before - 3 * CLUSTER); // the 20M (2 clusters) and 60M (1) writes
    expect(readDescriptor(dir).diskSizeSectors).toBe((16 * M) / 512);
    await expectRealPloopAccepts(dir);
  });

  test('grow a preallocated image allocates the new space', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 4 * M, CLUSTER, ['write -P 0x66 0 4M']);
    settleFolder(dir);
    resize(dir, 8 * M, true);
    expectClean(delta);
    const image = openPloopImage(dir);
    expect(countBlocks(layoutOf(image, 0)).allocatedBlocks).toBe(128);
    closePloopImage(image);
    qemuIo(delta, ['read -P 0x66 0 4M', 'read -P 0 4M 4M'], true);
    await expectRealPloopAccepts(dir);
  });
});

describe('compact and convert', () => {
  test('compact drops the free clusters, fills holes from the tail and truncates', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 64 * M, CLUSTER, PATTERN);
    settleFolder(dir);
    const expected = saveRaw(delta, dir, 'expected.raw');
    // Free: virtual clusters 2..3 (0x22 at 128k..192k) and the 20M write (clusters 320, 321).
    const free = [2, 3, 320, 321, 500];
    const raw = readFileSync(expected);
    for (const c of free) raw.fill(0, c * CLUSTER, (c + 1) * CLUSTER);
    writeFileSync(expected, raw);
    const image = openPloopImage(dir, { write: true });
    const before = countBlocks(layoutOf(image, 0));
    const plan = planCompact(layoutOf(image, 0), [], free);
    const sizeBefore = statSync(delta).size;
    executeCompact(image, plan);
    closePloopImage(image);
    expect(sizeBefore - statSync(delta).size).toBe(plan.reclaimedBytes);
    expect(plan.reclaimedBytes).toBe(4 * CLUSTER);
    expectClean(delta);
    expectContent(delta, expected);
    const after = openPloopImage(dir);
    expect(countBlocks(layoutOf(after, 0)).allocatedBlocks).toBe(before.allocatedBlocks - 4);
    closePloopImage(after);
    await expectRealPloopAccepts(dir);
  });

  test('compact on a chain never unmaps a cluster that a lower delta holds', async () => {
    const dir = freshDir();
    qemuCreate(join(dir, 'root.hds'), 4 * M, CLUSTER);
    qemuIo(join(dir, 'root.hds'), ['write -P 0xaa 0 64k']);
    qemuCreate(join(dir, 'top.hds'), 4 * M, CLUSTER);
    qemuIo(join(dir, 'top.hds'), ['write -P 0xbb 0 128k']);
    writeFileSync(
      join(dir, 'DiskDescriptor.xml'),
      descriptorXml({ sizeSectors: (4 * M) / 512, blockSizeSectors: CLUSTER / 512, shots: [{ guid: TOP_GUID, file: 'top.hds', parent: BASE_GUID }, { guid: BASE_GUID, file: 'root.hds', parent: ROOT_PARENT }] }),
    );
    settleFolder(dir);
    const image = openPloopImage(dir, { write: true });
    const plan = planCompact(layoutOf(image, 0), [layoutOf(image, 1)], [0, 1]);
    expect(plan.notReclaimable).toBe(1);
    executeCompact(image, plan);
    expect(readVirtual(image, 0, 64 * K).every((b) => b === 0xbb)).toBe(true);
    expect(readVirtual(image, 64 * K, 64 * K).every((b) => b === 0)).toBe(true);
    closePloopImage(image);
    expectClean(join(dir, 'top.hds'));
    await expectRealPloopAccepts(dir);
  });

  test('convert to preallocated and back keeps the content and the host size follows', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 16 * M, CLUSTER, ['write -P 0x11 0 64k', 'write -P 0 1M 64k', 'write -P 0x77 8M 128k']);
    settleFolder(dir);
    const expected = saveRaw(delta, dir, 'expected.raw');
    let image = openPloopImage(dir, { write: true });
    executeConvert(image, planConvert(image, 'preallocated'));
    closePloopImage(image);
    expectClean(delta);
    expectContent(delta, expected);
    expect(statSync(delta).size).toBe(CLUSTER + 16 * M);
    expect(readDescriptor(dir).preallocated).toBe(true);
    await expectRealPloopAccepts(dir);

    image = openPloopImage(dir, { write: true });
    const plan = planConvert(image, 'expanding');
    expect(plan.compact!.releasedClusters).toBe(256 - 3);
    executeConvert(image, plan);
    closePloopImage(image);
    expectClean(delta);
    expectContent(delta, expected);
    expect(statSync(delta).size).toBe(CLUSTER + 3 * CLUSTER);
    expect(readDescriptor(dir).preallocated).toBe(false);
    await expectRealPloopAccepts(dir);
  });
});

describe('corrupt input: a clear error, and nothing changes', () => {
  function corrupt(poke: (dir: string, delta: string) => void, expected: RegExp): void {
    const dir = freshDir();
    const delta = makePloop(dir, 4 * M, CLUSTER, ['write -P 0x11 0 128k']);
    poke(dir, delta);
    const before = sha(readFileSync(delta)) + sha(readFileSync(join(dir, 'DiskDescriptor.xml')));
    let error: unknown;
    try {
      closePloopImage(openPloopImage(dir, { write: true }));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ImageInvalid);
    expect((error as Error).message).toMatch(expected);
    expect(sha(readFileSync(delta)) + sha(readFileSync(join(dir, 'DiskDescriptor.xml')))).toBe(before);
  }
  const pokeBytes = (delta: string, offset: number, bytes: number[]): void => {
    const data = readFileSync(delta);
    Buffer.from(bytes).copy(data, offset);
    writeFileSync(delta, data);
  };

  test('truncated file', () => corrupt((_d, delta) => truncateSync(delta, 100), /truncated/));
  test('bad signature', () => corrupt((_d, delta) => pokeBytes(delta, 0, [0x58]), /not a ploop delta/));
  test('BAT entry past the end', () => corrupt((_d, delta) => pokeBytes(delta, 64, [0xff, 0, 0, 0]), /past the end of the file/));
  test('duplicate BAT entries', () => corrupt((_d, delta) => pokeBytes(delta, 68, [1, 0, 0, 0]), /already used/));
  test('XML garbage', () => corrupt((dir) => writeFileSync(join(dir, 'DiskDescriptor.xml'), '<Parallels_disk_image><oops'), /well-formed/));
  test('path traversal', () => corrupt((dir) => writeFileSync(join(dir, 'DiskDescriptor.xml'), readFileSync(join(dir, 'DiskDescriptor.xml'), 'utf8').replace('<File>root.hds</File>', '<File>../../etc/passwd</File>')), /the image file "\.\.\/\.\.\/etc\/passwd" uses "\.\.", which may leave the image folder/));
});

/** Runs the child; resolves to the number of durable writes when it finished, or undefined when it was killed. */
function runChild(op: string, dir: string, killAfter: number, arg: string): Promise<number | undefined> {
  return new Promise((done, fail) => {
    execFile(VITE_NODE, [CHILD, op, dir, String(killAfter), arg], { encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error && error.signal === 'SIGKILL') done(undefined);
      else if (error) fail(new Error(`child failed: ${stderr}`));
      else done(Number(/writes=(\d+)/.exec(stdout)![1]));
    });
  });
}

function virtualSize(delta: string): number {
  return (JSON.parse(qemuImg(['info', '-f', 'parallels', '-U', '--output=json', delta])) as { 'virtual-size': number })['virtual-size'];
}

describe('crash consistency (SIGKILL after every durable write)', () => {
  test('grow with BAT relocation: QEMU reads the old or the new content at every point', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 64 * M, CLUSTER, PATTERN);
    const pristine = join(dir, 'pristine');
    mkdirSync(pristine);
    copy(delta, join(pristine, 'root.hds'));
    copy(join(dir, 'DiskDescriptor.xml'), join(pristine, 'DiskDescriptor.xml'));
    // qemu-img compare (not strict) also wants the larger image's extra part to read as zeros.
    const expected = saveRaw(delta, pristine, 'expected.raw');
    const newSize = 2 * G; // 32768 entries: three clusters of BAT, two data clusters in the way
    const total = (await runChild('grow', dir, 0, String(newSize)))!;
    expect(total).toBeGreaterThan(5);
    for (let killAt = 1; killAt <= total; killAt++) {
      copy(join(pristine, 'root.hds'), delta);
      copy(join(pristine, 'DiskDescriptor.xml'), join(dir, 'DiskDescriptor.xml'));
      expect(await runChild('grow', dir, killAt, String(newSize)), `kill at ${killAt}`).toBeUndefined();
      // QEMU opens it read-only whatever the in-use mark says.
      expect([64 * M, newSize], `size after kill at ${killAt}`).toContain(virtualSize(delta));
      expectContent(delta, expected);
      // Our reader opens it, recovers, and qemu-img check is clean; running again completes the grow.
      const image = openPloopImage(dir, { write: true });
      recoverPloopImage(image);
      closePloopImage(image);
      expectClean(delta);
      expectContent(delta, expected);
      await runChild('grow', dir, 0, String(newSize));
      expectClean(delta);
      expect(virtualSize(delta)).toBe(newSize);
      expect(readDescriptor(dir).diskSizeSectors).toBe(newSize / 512);
    }
  });

  test('compact: at every point the kept clusters are intact and freed ones read old or zero', async () => {
    const dir = freshDir();
    const delta = makePloop(dir, 64 * M, CLUSTER, PATTERN);
    const pristine = readFileSync(delta);
    const oldRaw = qemuReadRaw(delta, dir);
    const free = [0, 2, 320];
    const total = (await runChild('compact', dir, 0, free.join(',')))!;
    expect(total).toBeGreaterThan(3);
    for (let killAt = 1; killAt <= total; killAt++) {
      writeFileSync(delta, pristine);
      expect(await runChild('compact', dir, killAt, free.join(',')), `kill at ${killAt}`).toBeUndefined();
      const raw = qemuReadRaw(delta, dir);
      for (let c = 0; c < 64 * M / CLUSTER; c++) {
        const now = raw.subarray(c * CLUSTER, (c + 1) * CLUSTER);
        const was = oldRaw.subarray(c * CLUSTER, (c + 1) * CLUSTER);
        if (free.includes(c)) expect(now.equals(was) || now.every((b) => b === 0), `cluster ${c} after kill at ${killAt}`).toBe(true);
        else expect(now.equals(was), `cluster ${c} after kill at ${killAt}`).toBe(true);
      }
      const image = openPloopImage(dir, { write: true });
      recoverPloopImage(image);
      closePloopImage(image);
      expectClean(delta);
    }
  });
});
