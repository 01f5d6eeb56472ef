// Oracles for the compact e2e tests, through host tools only: the CLI runner, host allocation, and the
// best possible allocation of an image (its raw export trimmed by the host kernel, counted in clusters).
import { spawn } from 'node:child_process';
import { closeSync, fsyncSync, openSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type BuiltImage, tool } from '../factory/index.js';
import { isFs, mountOptions } from '../factory/filesystems.js';
import { attachLoop, type LoopRange, mountDevice } from '../factory/host.js';
import { readLayout } from '../factory/lvm.js';
import { scoped } from '../factory/run.js';
import { lastPartition, readPartitionTable, SECTOR } from '../factory/table.js';
import { exportRaw, resolveData } from '../factory/verify.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (dist/src/cli/main.js) with the appliance forced to TCG. */
export function cli(args: readonly string[], onStderrLine?: (line: string, kill: () => void) => void): Promise<CliResult> {
  const main = join(process.cwd(), 'dist/src/cli/main.js');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [main, ...args], { env: { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' } });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) onStderrLine?.(line, () => child.kill('SIGKILL'));
    });
    child.on('close', (code, signal) => resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : 1), stdout, stderr }));
  });
}

/** Host bytes of the file, after an fsync: ext4 allocates extent-tree blocks at writeback, which would otherwise
 * land between two readings (seen: +4 KiB on a freshly built ploop delta during a compact that wrote nothing). */
export function hostBytes(file: string): number {
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return statSync(file).blocks * 512;
}

/**
 * What a perfect compact leaves allocated, at the image's cluster granularity: the raw export of the image,
 * its filesystem trimmed by the host kernel (swap: everything after the first page punched out), then every
 * cluster that still holds data. Metadata of the container itself is not counted.
 */
export async function bestAllocationBytes(image: BuiltImage, clusterBytes: number): Promise<number> {
  return scoped(async (scope) => {
    const { dataFile } = resolveData(image.hdd, image.format);
    const raw = await exportRaw(scope, dataFile, image.format);
    await scoped(async (inner) => {
      const { table } = await readPartitionTable(raw);
      const last = table === null ? undefined : lastPartition(table);
      let range: LoopRange = last === undefined ? { offsetBytes: 0, sizeBytes: statSync(raw).size } : { offsetBytes: last.start * SECTOR, sizeBytes: last.size * SECTOR };
      if (image.content === 'swap') {
        await tool('fallocate', ['--punch-hole', '--keep-size', '-o', String(range.offsetBytes + 4096), '-l', String(range.sizeBytes - 4096), raw]);
        return;
      }
      let device = await attachLoop(inner, raw, range);
      let kind = image.content === 'lvm' ? 'ext4' : image.content;
      if (image.content === 'lvm') {
        const layout = await readLayout(device);
        range = { offsetBytes: range.offsetBytes + layout.last.offsetBytes, sizeBytes: layout.last.sizeBytes };
        device = await attachLoop(inner, raw, range);
        kind = 'ext4';
      }
      if (!isFs(kind)) throw new Error(`no filesystem in ${image.content}`);
      const mnt = await mountDevice(inner, device, dirname(raw), mountOptions(kind));
      await tool('fstrim', [mnt]);
    });
    const extents = JSON.parse((await tool('qemu-img', ['map', '--output=json', '-f', 'raw', raw])).stdout) as { start: number; length: number; data: boolean }[];
    const touched = new Set<number>();
    for (const e of extents.filter((x) => x.data)) {
      for (let c = Math.floor(e.start / clusterBytes); c <= Math.floor((e.start + e.length - 1) / clusterBytes); c++) touched.add(c);
    }
    return touched.size * clusterBytes;
  });
}

export interface InfoJson {
  blockSize: number;
  totalBlocks: number;
  allocatedBlocks: number;
  usedBlocks: number;
  reclaimableBytes: number;
  heldByLowerLayersBytes: number;
  warnings: string[];
}

export interface CompactJson {
  dryRun: boolean;
  unchanged: boolean;
  plan: string[];
  messages: string[];
  hostBytesBefore: number;
  hostBytesAfter: number;
  freedBytes: number;
  warnings: string[];
}

export function parseJson<T>(result: CliResult, what: string): T {
  if (result.code !== 0) throw new Error(`${what} exited with ${result.code}:\n${result.stderr}\n${result.stdout}`);
  return JSON.parse(result.stdout) as T;
}
