// Real ploop (Debian's `ploop` package, 1.15) as a test oracle for user-space work: check, snapshot-list,
// init, snapshot, snapshot-merge, offline grow and convert. How it is started here (an environment variable of at
// least 4 KiB; large_disk_support from a private mount namespace) is in real-ploop-exec.ts.
// Independent of src/: the descriptor is read with the factory's own reader.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { readDescriptor } from '../factory/ploop.js';
import { tool, type ToolResult } from '../factory/run.js';
import { ploopInvocation, settleDelta } from './real-ploop-exec.js';

export { realPloopInstalled, settleDelta } from './real-ploop-exec.js';

/** Runs `ploop ARGS` (absolute paths) in the private namespace; resolves whatever the exit code (callers judge it). */
export async function ploop(args: readonly string[]): Promise<ToolResult> {
  const { argv, env } = ploopInvocation(args);
  const anyCode = Array.from({ length: 256 }, (_, i) => i);
  return tool('unshare', argv, { ok: anyCode, env });
}

/** `ploop ARGS`, failing with its output unless it exits 0. */
export async function ploopOk(args: readonly string[]): Promise<ToolResult> {
  const result = await ploop(args);
  if (result.exitCode !== 0) throw new Error(`ploop ${args.join(' ')} exited with ${result.exitCode}:\n${(result.stdout + result.stderr).trim()}`);
  return result;
}

/**
 * `ploop grow -s SIZE DiskDescriptor.xml` (offline), then the one repair ploop 1.15 needs after its own grow: its
 * grow_delta (lib/delta_read.c) sets CIF_Empty when `st_size / m_Sectors <= m_FirstBlockOffset`, bytes divided by
 * sectors per cluster against sectors, so with large clusters (64 MiB: any file under 256 clusters) it marks a delta
 * holding data as empty, and its own `check -r` then says "CIF_Empty flag is incorrect" (it does so on images that
 * only ploop ever wrote, too). Only when that condition holds, and only that complaint, is repaired with ploop's
 * own `check -f`; anything else real ploop says fails the caller.
 */
export async function ploopGrowOffline(folder: string, size: string): Promise<void> {
  await ploopOk(['grow', '-s', size, join(folder, 'DiskDescriptor.xml')]);
  for (const delta of readDescriptor(folder).chain) {
    if (!growMarkedEmpty(delta)) continue;
    const problems = await ploopCheckProblems(delta);
    const onlyEmptyFlag = problems.length === 1 && /CIF_Empty flag is incorrect \| [^|]*unable to fix the header on ro image$/.test(problems[0]!);
    if (problems.length > 0 && !onlyEmptyFlag) throw new Error(problems.join('\n'));
    if (onlyEmptyFlag) await ploopOk(['check', '-f', delta]);
  }
}

/** Whether ploop 1.15's grow_delta condition for setting CIF_Empty (see ploopGrowOffline) holds for this delta. */
function growMarkedEmpty(delta: string): boolean {
  const header = Buffer.alloc(64);
  const fd = openSync(delta, 'r');
  try {
    readSync(fd, header, 0, 64, 0);
    const clusterSectors = header.readUInt32LE(28);
    const firstBlockSectors = header.readUInt32LE(48);
    return (header.readUInt32LE(52) & 1) === 1 && Math.floor(fstatSync(fd).size / clusterSectors) <= firstBlockSectors;
  } finally {
    closeSync(fd);
  }
}

/** Settles every delta of a folder (see settleDelta): for images that QEMU made, before our tool sees them. */
export function settleFolder(folder: string): void {
  for (const delta of readDescriptor(folder).chain) settleDelta(delta);
}

/** Problems real ploop finds with one delta: `ploop check -r -f -c` (read-only: forced, duplicate and hole scan). */
export async function ploopCheckProblems(delta: string): Promise<string[]> {
  const result = await ploop(['check', '-r', '-f', '-c', delta]);
  if (result.exitCode === 0) return [];
  return [`ploop check -r -f -c ${delta} exited with ${result.exitCode}: ${(result.stdout + result.stderr).trim().replace(/\n/g, ' | ')}`];
}

/** Problems real ploop finds with a folder: every delta checked, and `ploop snapshot-list` reads the descriptor and names the chain. */
export async function realPloopProblems(folder: string): Promise<string[]> {
  const problems: string[] = [];
  const descriptor = join(folder, 'DiskDescriptor.xml');
  const chain = readDescriptor(folder).chain;
  for (const delta of chain) problems.push(...(await ploopCheckProblems(delta)));
  const list = await ploop(['snapshot-list', descriptor]);
  if (list.exitCode !== 0) {
    problems.push(`ploop snapshot-list ${descriptor} exited with ${list.exitCode}: ${(list.stdout + list.stderr).trim().replace(/\n/g, ' | ')}`);
  } else {
    for (const file of chain) {
      if (!list.stdout.includes(file.split('/').pop()!)) problems.push(`ploop snapshot-list ${descriptor} does not list ${file}:\n${list.stdout.trim()}`);
    }
  }
  return problems;
}

/** Throws unless real ploop accepts every delta of the folder and its descriptor (the shared verifier calls this). */
export async function assertRealPloopAccepts(folder: string): Promise<void> {
  const problems = await realPloopProblems(folder);
  if (problems.length > 0) throw new Error(`real ploop rejects ${folder}:\n- ${problems.join('\n- ')}`);
}
