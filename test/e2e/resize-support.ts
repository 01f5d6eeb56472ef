// Shared helpers of the resize end-to-end tests: run the built CLI, and check a resized image with the factory's
// independent verifier (qemu-img check, sfdisk/sgdisk, fsck, checksums) plus the geometry the brief promises.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { expect } from 'vitest';
import { type BuiltImage, verifyImage, type VerifyReport } from '../factory/index.js';

export const MiB = 1024 * 1024;
// PRL_DISK_TOOL_CLI runs the same tests against another build (e.g. main's, to show a new check failing there).
const CLI = process.env.PRL_DISK_TOOL_CLI ?? join(process.cwd(), 'dist/src/cli/main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(args: readonly string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg', LC_ALL: 'C' }, maxBuffer: 64 * MiB, timeout: 15 * 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export interface Info {
  size: number;
  minimum: number;
  minimumKeepLastPartition: number;
  warnings: string[];
}

export async function info(hdd: string): Promise<Info> {
  const result = await cli(['resize', '--info', '--json', '--hdd', hdd]);
  expect(result.code, result.stderr).toBe(0);
  const parsed = JSON.parse(result.stdout) as Info;
  expect(parsed.minimum).toBeLessThanOrEqual(parsed.minimumKeepLastPartition);
  expect(parsed.minimumKeepLastPartition).toBeLessThanOrEqual(parsed.size);
  return parsed;
}

export async function resize(hdd: string, size: string, ...extra: string[]): Promise<CliResult & { json?: Record<string, unknown> }> {
  const result = await cli(['resize', '--hdd', hdd, '--size', size, '--json', ...extra]);
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(result.stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return json ? { ...result, json } : result;
}

/** sha256 of every file of the image (a qcow2 file, or a ploop folder's files), to prove "nothing changed". */
export async function imageSums(built: BuiltImage): Promise<Record<string, string>> {
  const files = built.format === 'qcow2' ? [built.hdd] : (await readdir(built.hdd)).map((name) => join(built.hdd, name));
  const sums: Record<string, string> = {};
  for (const file of files) sums[file] = createHash('sha256').update(await readFile(file)).digest('hex');
  const leftovers = (await readdir(dirname(built.dataFile))).filter((name) => name.endsWith('.prl-tmp'));
  expect(leftovers).toEqual([]);
  return sums;
}

/**
 * Verifies a resized image: everything verifyImage checks (files identical, fsck, qemu-img check, sgdisk -v), the
 * new virtual size, the last partition ending within 1 MiB of the last usable sector with its attributes kept,
 * and the content filling it (within 1 MiB; swap within a page).
 */
export async function verifyResized(built: BuiltImage, sizeBytes: number): Promise<VerifyReport> {
  const report = await verifyImage(built);
  expect(report.image.virtualSizeBytes).toBe(sizeBytes);
  const sectors = sizeBytes / 512;
  if (built.table === 'none') {
    expect(sizeBytes - report.fsSizeBytes!).toBeLessThan(MiB);
    return report;
  }
  const table = report.table!;
  const lastUsable = table.label === 'gpt' ? table.lastlba! : sectors - 1;
  const last = report.lastPartition!;
  const end = last.startSector + last.sizeSectors - 1;
  expect(end).toBeLessThanOrEqual(lastUsable);
  expect(lastUsable - end).toBeLessThan(2048);
  const before = built.partitions.find((p) => p.number === last.number)!;
  const after = table.partitions.find((p) => p.start === last.startSector)!;
  expect(after.start).toBe(before.startSector);
  expect(after.type.toUpperCase().replace(/^0+/, '')).toBe(before.typeId.toUpperCase().replace(/^0+/, ''));
  if (table.label === 'gpt') expect({ uuid: after.uuid, name: after.name, attrs: after.attrs }).toEqual({ uuid: before.uuid, name: before.name, attrs: before.attrs });
  else expect(after.bootable ?? false).toBe(before.bootable ?? false);
  if (built.table === 'logical') {
    const container = table.partitions.find((p) => ['5', 'f', '85'].includes(p.type.toLowerCase()))!;
    expect(container.start + container.size - 1).toBeGreaterThanOrEqual(end);
  }
  if (built.content === 'swap') {
    expect(report.partitionSizeBytes! - report.fsSizeBytes!).toBeLessThan(4096);
    expect(report.swapUuid).toBe(built.swapUuid);
  } else if (built.content === 'lvm') {
    // The PV fills the partition, the last LV ends with the PV, its filesystem fills the LV.
    expect(report.partitionSizeBytes! - report.pvSizeBytes!).toBeLessThan(4 * MiB);
    expect(report.lvSizeBytes! - report.fsSizeBytes!).toBeLessThan(MiB);
  } else {
    expect(report.partitionSizeBytes! - report.fsSizeBytes!).toBeLessThan(MiB);
  }
  return report;
}
