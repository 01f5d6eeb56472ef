// buildImage: a raw disk made with host tools (sfdisk, mkfs, loop mounts, lvm), then converted to qcow2 or ploop.
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { planDeleted, planFiles, removeFiles, writeFiles } from './content.js';
import { type FsKind, isFs, makeFs, mountOptions } from './filesystems.js';
import { attachLoop, type LoopRange, mountDevice } from './host.js';
import { createVg, forgetVg, readLayout } from './lvm.js';
import { CLUSTER_SECTORS, DELTA_NAME, DESCRIPTOR, descriptorXml } from './ploop.js';
import { type Scope, scoped, tempDir, tool } from './run.js';
import { isExtended, lastPartition, layoutScript, partitionNumber, readPartitionTable, SECTOR, seededGuid, toPartitionInfo, writeTable } from './table.js';
import type { BuiltImage, ImageSpec, PartitionInfo } from './types.js';
import { settleDelta } from '../helpers/real-ploop-exec.js';

const MiB = 1024 * 1024;
export const SWAP_LABEL = 'prl-test-swap';

export function defaultName(spec: ImageSpec): string {
  return `${spec.format}-${spec.table}-${spec.content}-s${spec.seed ?? 1}${spec.preallocated === true ? '-plain' : ''}`;
}

/** Builds the image described by `spec` in `spec.dir`; on failure nothing is left behind (no image, loop or mount). */
export async function buildImage(spec: ImageSpec): Promise<BuiltImage> {
  const began = Date.now();
  const seed = spec.seed ?? 1;
  const sizeMiB = spec.sizeMiB ?? 1024;
  const name = spec.name ?? defaultName(spec);
  await mkdir(spec.dir, { recursive: true });
  const hdd = spec.format === 'qcow2' ? join(spec.dir, `${name}.qcow2`) : join(spec.dir, name);
  const dataFile = spec.format === 'qcow2' ? hdd : join(hdd, DELTA_NAME);
  if (existsSync(hdd)) throw new Error(`${hdd} already exists; the factory never overwrites an image`);

  return scoped(async (scope) => {
    const tmp = await tempDir(scope, 'build');
    const raw = join(tmp, 'disk.raw');
    const fh = await open(raw, 'w');
    await fh.truncate(sizeMiB * MiB);
    await fh.close();

    let partitions: PartitionInfo[] = [];
    let range: LoopRange = { offsetBytes: 0, sizeBytes: sizeMiB * MiB };
    const otherPartitionSums: Record<number, string> = {};
    const script = layoutScript(spec.table, spec.content, seed);
    if (script !== null) {
      await writeTable(raw, script);
      const { table } = await readPartitionTable(raw);
      if (table === null) throw new Error('sfdisk wrote a table that it cannot read back');
      partitions = toPartitionInfo(table);
      const last = lastPartition(table);
      range = { offsetBytes: last.start * SECTOR, sizeBytes: last.size * SECTOR };
      for (const p of table.partitions) {
        if (p === last || isExtended(table, p)) continue;
        const number = partitionNumber(table, p);
        otherPartitionSums[number] = await fillRange(raw, p.start * SECTOR, p.size * SECTOR, `${seed}:partition ${number}`);
      }
    }

    const made = await scoped((inner) => fillContent(inner, spec, seed, raw, range, tmp));

    try {
      await convert(spec, raw, hdd, dataFile, sizeMiB);
    } catch (err) {
      await rm(hdd, { recursive: true, force: true });
      throw err;
    }
    const built: BuiltImage = {
      spec: { ...spec, seed, sizeMiB, name },
      format: spec.format,
      table: spec.table,
      content: spec.content,
      hdd,
      dataFile,
      checksums: made.checksums,
      partitions,
      otherPartitionSums,
      buildMs: 0,
    };
    if (made.swapUuid !== undefined) {
      built.swapUuid = made.swapUuid;
      built.swapLabel = SWAP_LABEL;
    }
    if (made.vgName !== undefined) {
      built.vgName = made.vgName;
      built.lvName = made.lvName!;
    }
    built.buildMs = Date.now() - began;
    return built;
  });
}

/** Fills a byte range of the raw disk with seeded bytes (a recognisable "other partition") and returns its sha256. */
async function fillRange(raw: string, offsetBytes: number, sizeBytes: number, what: string): Promise<string> {
  const key = createHash('sha256').update(`prl-factory-range:${what}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const hash = createHash('sha256');
  const fh = await open(raw, 'r+');
  try {
    for (let done = 0; done < sizeBytes; ) {
      const chunk = cipher.update(Buffer.alloc(Math.min(MiB, sizeBytes - done)));
      await fh.write(chunk, 0, chunk.length, offsetBytes + done);
      hash.update(chunk);
      done += chunk.length;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

interface Made {
  checksums: Record<string, string>;
  swapUuid?: string;
  vgName?: string;
  lvName?: string;
}

/** Everything that needs loop devices and mounts; the scope releases them all before the raw file is converted. */
async function fillContent(scope: Scope, spec: ImageSpec, seed: number, raw: string, range: LoopRange, tmp: string): Promise<Made> {
  const device = await attachLoop(scope, raw, range);
  if (spec.content === 'swap') {
    const uuid = seededGuid(seed, 'swap').toLowerCase();
    await tool('mkswap', ['-U', uuid, '-L', SWAP_LABEL, device]);
    return { checksums: {}, swapUuid: uuid };
  }
  if (spec.content === 'lvm') {
    // Unique per seed and process, so parallel test files never meet the same VG name.
    const vg = `prltest${seed}x${process.pid}x${Date.now() % 100000}`;
    scope.defer(`forget VG ${vg}`, () => forgetVg(vg));
    await createVg(device, vg);
    const layout = await readLayout(device);
    const lv = await attachLoop(scope, raw, { offsetBytes: range.offsetBytes + layout.last.offsetBytes, sizeBytes: layout.last.sizeBytes });
    const checksums = await fillFs(scope, lv, 'ext4', spec, seed, tmp);
    return { checksums, vgName: vg, lvName: layout.last.name };
  }
  if (!isFs(spec.content)) throw new Error(`unknown content ${spec.content as string}`);
  return { checksums: await fillFs(scope, device, spec.content, spec, seed, tmp) };
}

async function fillFs(scope: Scope, device: string, kind: FsKind, spec: ImageSpec, seed: number, tmp: string): Promise<Record<string, string>> {
  await makeFs(device, kind, 'prltest');
  const how = mountOptions(kind);
  const mnt = await mountDevice(scope, device, tmp, how);
  const deleted = planDeleted(spec.deletedMiB ?? 64);
  // Stale data first, so that the kept files land in the holes it leaves as well as after it.
  await writeFiles(mnt, deleted, seed + 1_000_003);
  await tool('sync', ['-f', mnt]);
  const checksums = await writeFiles(mnt, planFiles(spec.filesMiB ?? 64), seed);
  await removeFiles(mnt, deleted);
  await tool('sync', ['-f', mnt]);
  return checksums;
}

async function convert(spec: ImageSpec, raw: string, hdd: string, dataFile: string, sizeMiB: number): Promise<void> {
  const plain = spec.preallocated === true;
  if (spec.format === 'qcow2') {
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ...(plain ? ['-o', 'preallocation=falloc'] : []), raw, hdd]);
    return;
  }
  await mkdir(hdd);
  // -S 0 writes zero clusters too, so a preallocated delta has every BAT entry allocated.
  await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', '-o', `cluster_size=${CLUSTER_SECTORS * SECTOR}`, ...(plain ? ['-S', '0'] : []), raw, dataFile]);
  await writeFile(join(hdd, DESCRIPTOR), descriptorXml(sizeMiB * 2048, plain));
  // What a ploop host would hold (see settleDelta), so that the verifier can judge our output by ploop's strict check.
  settleDelta(dataFile);
}
