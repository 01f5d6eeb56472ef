// verifyImage: the oracle. qemu-img check, a raw export read by sfdisk/sgdisk, each filesystem's own checker in its
// strictest read-only mode, the fill rule (content end vs. container end) and the checksums.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { compareSums, sha256Tree } from './content.js';
import { checkFs, type FsKind, fsSizeBytes, isFs, mountOptions, readSwap } from './filesystems.js';
import { fillProblems } from './fill.js';
import { attachLoop, type LoopRange, mountDevice } from './host.js';
import { checkVg, readLayout } from './lvm.js';
import { deltaClusterSectors, readDescriptor } from './ploop.js';
import { assertRealPloopAccepts } from '../helpers/real-ploop.js';
import { type Scope, scoped, tempDir, tool } from './run.js';
import { isExtended, lastPartition, partitionNumber, readPartitionTable, SECTOR } from './table.js';
import type { BuiltImage, ImageCheck, ImageFormat, PloopFacts, VerifyOptions, VerifyReport, VerifyTarget } from './types.js';

function isBuilt(image: VerifyTarget | BuiltImage): image is BuiltImage {
  return 'checksums' in image && 'spec' in image;
}

/** The file qemu-img reads: the qcow2 file, or the ploop folder's top delta (its descriptor is checked on the way). */
export function resolveData(hdd: string, format: ImageFormat): { dataFile: string; ploop?: ReturnType<typeof readDescriptor> } {
  if (format === 'qcow2') return { dataFile: hdd };
  const folder = statSync(hdd).isDirectory() ? hdd : dirname(hdd);
  // --hdd may name a file inside the folder; the data is still the descriptor's image.
  const facts = readDescriptor(folder);
  return { dataFile: facts.deltaFile, ploop: facts };
}

/** qemu-img check and info of one file; problems are added to `problems`. */
export async function checkImageFile(dataFile: string, format: ImageFormat, problems: string[]): Promise<ImageCheck> {
  const fmt = format === 'qcow2' ? 'qcow2' : 'parallels';
  // 2: corruptions, 3: leaks; both print JSON too.
  const check = await tool('qemu-img', ['check', '-f', fmt, '--output=json', dataFile], { ok: [0, 2, 3] });
  const result = JSON.parse(check.stdout) as Record<string, unknown>;
  for (const key of ['check-errors', 'corruptions', 'leaks', 'corruptions-fixed', 'leaks-fixed']) {
    const n = result[key];
    if (typeof n === 'number' && n !== 0) problems.push(`qemu-img check ${dataFile}: ${key} = ${n}`);
  }
  if (check.exitCode !== 0) problems.push(`qemu-img check ${dataFile} exited with ${check.exitCode}:\n${check.stdout.trim()}`);
  const info = JSON.parse((await tool('qemu-img', ['info', '-f', fmt, '--output=json', dataFile])).stdout) as Record<string, unknown>;
  return {
    allocatedClusters: Number(result['allocated-clusters'] ?? 0),
    totalClusters: Number(result['total-clusters'] ?? 0),
    hostBytes: statSync(dataFile).blocks * 512,
    virtualSizeBytes: Number(info['virtual-size']),
  };
}

/**
 * QEMU's parallels driver reads unallocated clusters from a backing node, so a ploop chain (top first) is named
 * as nested backing options; commas in paths are doubled, QemuOpts' escape.
 */
function ploopChainOpts(chain: readonly string[]): string {
  return chain
    .map((file, depth) => {
      const prefix = 'backing.'.repeat(depth);
      return `${prefix}driver=parallels,${prefix}file.driver=file,${prefix}file.filename=${file.replace(/,/g, ',,')}`;
    })
    .join(',');
}

/** Converts the image (a ploop: its whole chain) to a raw temp file (sparse) that is removed when the scope closes. */
export async function exportRaw(scope: Scope, dataFile: string, format: ImageFormat, ploopChain: readonly string[] = [dataFile]): Promise<string> {
  const tmp = await tempDir(scope, 'verify');
  const raw = join(tmp, 'disk.raw');
  const source = format === 'ploop' && ploopChain.length > 1 ? ['--image-opts', ploopChainOpts(ploopChain)] : ['-f', format === 'qcow2' ? 'qcow2' : 'parallels', dataFile];
  await tool('qemu-img', ['convert', ...source, '-O', 'raw', raw]);
  return raw;
}

async function hashRange(raw: string, offsetBytes: number, sizeBytes: number): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(raw, 'r');
  try {
    const buffer = Buffer.alloc(1024 * 1024);
    for (let done = 0; done < sizeBytes; ) {
      const { bytesRead } = await fh.read(buffer, 0, Math.min(buffer.length, sizeBytes - done), offsetBytes + done);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

/**
 * Verifies an image and returns what it found; throws one Error listing every mismatch.
 * Given a BuiltImage, its checksums, swap identity and other partitions' sums are the default expectations.
 */
export async function verifyImage(image: VerifyTarget | BuiltImage, options: VerifyOptions = {}): Promise<VerifyReport> {
  const built = isBuilt(image) ? image : undefined;
  const expectedSums = options.checksums === undefined ? built?.checksums : options.checksums;
  const expectedOthers = options.otherPartitionSums === undefined ? built?.otherPartitionSums : options.otherPartitionSums;
  const swapUuid = options.swapUuid ?? built?.swapUuid;
  const swapLabel = options.swapLabel ?? built?.swapLabel;
  const problems: string[] = [];
  const where = `${image.format} image ${image.hdd}`;

  const report = await scoped(async (scope) => {
    const { dataFile, ploop: descriptor } = resolveData(image.hdd, image.format);
    const imageFacts = await checkImageFile(dataFile, image.format, problems);
    let ploop: PloopFacts | undefined;
    if (descriptor !== undefined) {
      problems.push(...descriptor.problems);
      // Real ploop must read what we leave: every delta checked, the descriptor listed (issue 15).
      await collect(problems, () => assertRealPloopAccepts(statSync(image.hdd).isDirectory() ? image.hdd : dirname(image.hdd)));
      for (const lower of descriptor.chain.slice(1)) await checkImageFile(lower, image.format, problems);
      ploop = {
        diskSizeSectors: descriptor.diskSizeSectors,
        blocksizeSectors: descriptor.blocksizeSectors,
        imageType: descriptor.imageType,
        preallocated: descriptor.preallocated,
        deltaFile: dataFile,
        headerClusterSectors: await deltaClusterSectors(dataFile),
      };
      if (ploop.diskSizeSectors * SECTOR !== imageFacts.virtualSizeBytes) {
        problems.push(`DiskDescriptor.xml says ${ploop.diskSizeSectors} sectors, the delta ${imageFacts.virtualSizeBytes / SECTOR}`);
      }
      if (ploop.blocksizeSectors !== ploop.headerClusterSectors) {
        problems.push(`DiskDescriptor.xml Blocksize ${ploop.blocksizeSectors} differs from the delta's cluster size ${ploop.headerClusterSectors}`);
      }
      if (ploop.preallocated && imageFacts.allocatedClusters !== imageFacts.totalClusters) {
        problems.push(`preallocated ploop has ${imageFacts.allocatedClusters} of ${imageFacts.totalClusters} clusters allocated`);
      }
    }

    const raw = await exportRaw(scope, dataFile, image.format, descriptor?.chain);
    const reading = await readPartitionTable(raw);
    problems.push(...reading.problems);
    const table = reading.table;
    let range: LoopRange = { offsetBytes: 0, sizeBytes: imageFacts.virtualSizeBytes };
    const out: VerifyReport = { imageCheck: 'clean', image: imageFacts, table, fsck: 'n/a', files: {} };
    if (ploop !== undefined) out.ploop = ploop;
    if (reading.sgdiskVerify !== undefined) out.sgdiskVerify = reading.sgdiskVerify;

    const wantLabel = image.table === 'none' ? null : image.table === 'gpt' ? 'gpt' : 'dos';
    if ((table?.label ?? null) !== wantLabel) {
      problems.push(`partition table is ${table?.label ?? 'absent'}, expected ${wantLabel ?? 'none'}`);
    } else if (table !== null) {
      const last = lastPartition(table);
      const number = partitionNumber(table, last);
      out.lastPartition = { number, startSector: last.start, sizeSectors: last.size };
      range = { offsetBytes: last.start * SECTOR, sizeBytes: last.size * SECTOR };
      if (image.table === 'logical' && number < 5) problems.push(`last partition is ${number}, expected a logical one (>= 5)`);
      if (image.table === 'logical' && !table.partitions.some((p) => isExtended(table, p) && p.start <= last.start && last.start + last.size <= p.start + p.size)) {
        problems.push(`logical partition ${number} is not inside an extended partition`);
      }
      for (const [num, sum] of Object.entries(expectedOthers ?? {})) {
        const p = table.partitions.find((q) => partitionNumber(table, q) === Number(num));
        if (p === undefined) problems.push(`partition ${num} is missing`);
        else if ((await hashRange(raw, p.start * SECTOR, p.size * SECTOR)) !== sum) problems.push(`the bytes of partition ${num} changed`);
      }
    }
    out.partitionSizeBytes = range.sizeBytes;

    const device = await attachLoop(scope, raw, range, true);
    if (image.content === 'swap') {
      const swap = await readSwap(device);
      out.swapUuid = swap.uuid;
      out.swapLabel = swap.label;
      out.fsSizeBytes = swap.sizeBytes;
      if (swapUuid !== undefined && swap.uuid !== swapUuid) problems.push(`swap UUID is ${swap.uuid}, expected ${swapUuid}`);
      if (swapLabel !== undefined && swap.label !== swapLabel) problems.push(`swap label is "${swap.label}", expected "${swapLabel}"`);
      problems.push(...(await fillProblems(device, 'swap', range.sizeBytes, swap.sizeBytes)));
      return out;
    }
    let fsDevice = device;
    let containerBytes = range.sizeBytes;
    let kind: FsKind;
    if (image.content === 'lvm') {
      const layout = await readLayout(device);
      await collect(problems, () => checkVg(device, layout.vg));
      if (built?.vgName !== undefined && layout.vg !== built.vgName) problems.push(`VG is ${layout.vg}, expected ${built.vgName}`);
      if (built?.lvName !== undefined && layout.last.name !== built.lvName) problems.push(`last LV is ${layout.last.name}, expected ${built.lvName}`);
      out.pvSizeBytes = layout.pvSizeBytes;
      out.lvSizeBytes = layout.last.sizeBytes;
      fsDevice = await attachLoop(scope, raw, { offsetBytes: range.offsetBytes + layout.last.offsetBytes, sizeBytes: layout.last.sizeBytes }, true);
      containerBytes = layout.last.sizeBytes;
      kind = 'ext4';
    } else if (isFs(image.content)) {
      kind = image.content;
    } else {
      throw new Error(`unknown content ${image.content as string}`);
    }
    const before = problems.length;
    await collect(problems, async () => {
      out.fsckOutput = await checkFs(fsDevice, kind);
    });
    if (problems.length === before) out.fsck = 'clean';
    out.fsSizeBytes = await fsSizeBytes(fsDevice, kind);
    // The fill rule (docs/resize.md): the content spans its container as its format expects.
    problems.push(...(await fillProblems(fsDevice, kind, containerBytes)));
    const mnt = await mountDevice(scope, fsDevice, dirname(raw), { readOnly: true, ...readOnlyMount(kind) });
    out.files = sha256Tree(mnt);
    if (expectedSums !== undefined && expectedSums !== null) problems.push(...compareSums(expectedSums, out.files, options.allowExtraFiles === true));
    return out;
  });

  if (problems.length > 0) throw new Error(`${where} failed verification:\n- ${problems.join('\n- ')}`);
  return report;
}

/** Read-only mounts that never replay a journal or log (the loop device is read-only too). */
function readOnlyMount(kind: FsKind): { ntfs: boolean; options: string[] } {
  const base = mountOptions(kind);
  if (kind === 'ext3' || kind === 'ext4') return { ...base, options: [...base.options, 'noload'] };
  if (kind === 'xfs') return { ...base, options: [...base.options, 'norecovery'] };
  return base;
}

async function collect(problems: string[], fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    problems.push((err as Error).message);
  }
}

/** Exports an image to raw and reads its table: what sfdisk -J and sgdisk -v say, for tests that only need the table. */
export async function readImagePartitionTable(image: { hdd: string; format: ImageFormat }): Promise<Awaited<ReturnType<typeof readPartitionTable>>> {
  return scoped(async (scope) => {
    const { dataFile } = resolveData(image.hdd, image.format);
    return readPartitionTable(await exportRaw(scope, dataFile, image.format));
  });
}
