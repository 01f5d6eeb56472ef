// The scale scenario (issue 19): a 256 GiB sparse disk (GPT, ext4 made with lazy initialisation, ~250 MiB of files)
// grown to 512 GiB, shrunk to Minimum and compacted in place, with time, host bytes written and host allocation
// after each step; beside it the peer's shrink (guestfish resize2fs + virt-resize) of the same grown image.
// `node dist/bench/run.js --scenario scale [--formats qcow2,ploop]`; see docs/benchmarks.md.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { tool, type ImageFormat } from '../test/factory/index.js';
import { CLUSTER_SECTORS, DELTA_NAME, DESCRIPTOR, descriptorXml } from '../test/factory/ploop.js';
import { allocatedBytes, measure, type Cmd, type Measurement } from './measure.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZE = 256 * GiB;
const GROW = 512 * GiB;
const FILES = 250;
const FILE_BYTES = MiB;
const PART2_START = 9 * MiB;
/** The granularity at which non-zero content is counted (a qcow2 cluster). */
const CLUSTER = 64 * 1024;

export interface ScaleStep {
  step: string;
  ok: boolean;
  wallMs: number;
  writeBytes: number;
  /** Host allocation of the image (its folder) after the step. */
  allocatedBytes: number;
  tail?: string;
}

export interface ScaleResult {
  format: ImageFormat;
  buildMs: number;
  steps: ScaleStep[];
  minimumBytes?: number;
  /** After the shrink: 64 KiB clusters of the guest disk holding a non-zero byte. */
  nonZeroBytes?: number;
  filesIdentical?: boolean;
  fsckClean?: boolean;
  peer?: ScaleStep & { outputAllocatedBytes: number };
}

export interface ScaleContext {
  cli: string;
  env: Record<string, string>;
  work: string;
  log: (line: string) => void;
}

function seeded(name: string, bytes: number): Buffer {
  const chunks: Buffer[] = [];
  let state = createHash('sha256').update(name).digest();
  for (let n = 0; n < bytes; n += 32) chunks.push((state = createHash('sha256').update(state).digest()));
  return Buffer.concat(chunks).subarray(0, bytes);
}

/** The disk as a raw file: GPT (partition 1: 8 MiB, partition 2: the rest), ext4 written by mke2fs -d, no loop device. */
async function buildRaw(dir: string, files: Record<string, string>): Promise<string> {
  const root = join(dir, 'root');
  for (let i = 0; i < FILES; i++) {
    const sub = join(root, `d${i % 10}`);
    await mkdir(sub, { recursive: true });
    const data = seeded(`scale-${i}`, FILE_BYTES);
    writeFileSync(join(sub, `f${i}.bin`), data);
    files[`d${i % 10}/f${i}.bin`] = createHash('sha256').update(data).digest('hex');
  }
  const raw = join(dir, 'disk.raw');
  writeFileSync(raw, '');
  await truncate(raw, SIZE);
  await tool('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', raw], { input: `label: gpt\nstart=2048, size=16384\nstart=${PART2_START / 512}\n` });
  const blocks = (SIZE - PART2_START - 33 * 512) / 4096;
  await tool('mkfs.ext4', ['-F', '-q', '-b', '4096', '-E', `offset=${PART2_START},lazy_itable_init=1,lazy_journal_init=1,nodiscard`, '-d', root, raw, String(Math.floor(blocks))], { timeoutMs: 60 * 60_000 });
  await rm(root, { recursive: true, force: true });
  return raw;
}

async function toImage(format: ImageFormat, raw: string, dir: string): Promise<{ hdd: string; dataFile: string }> {
  if (format === 'qcow2') {
    const hdd = join(dir, 'disk.qcow2');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, hdd], { timeoutMs: 60 * 60_000 });
    return { hdd, dataFile: hdd };
  }
  const hdd = join(dir, 'disk.hdd');
  await mkdir(hdd);
  const dataFile = join(hdd, DELTA_NAME);
  await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', '-o', `cluster_size=${CLUSTER_SECTORS * 512}`, raw, dataFile], { timeoutMs: 60 * 60_000 });
  writeFileSync(join(hdd, DESCRIPTOR), descriptorXml(SIZE / 512, false));
  return { hdd, dataFile };
}

function stepOf(name: string, m: Measurement, folder: string): ScaleStep {
  const s: ScaleStep = { step: name, ok: m.ok, wallMs: m.wallMs, writeBytes: m.writeBytes, allocatedBytes: allocatedBytes(folder) };
  if (!m.ok) s.tail = m.steps[m.steps.length - 1]?.tail ?? '';
  return s;
}

/** Bytes of CLUSTER-sized pieces of a (sparse) raw file that hold a non-zero byte; holes are skipped by reading. */
function nonZeroBytes(raw: string): number {
  const fd = openSync(raw, 'r');
  const chunk = Buffer.alloc(16 * MiB);
  const zeros = Buffer.alloc(CLUSTER);
  let total = 0;
  try {
    for (let at = 0; ; at += chunk.length) {
      const n = readSync(fd, chunk, 0, chunk.length, at);
      if (n === 0) break;
      for (let c = 0; c < n; c += CLUSTER) if (!chunk.subarray(c, Math.min(n, c + CLUSTER)).equals(zeros.subarray(0, Math.min(CLUSTER, n - c)))) total += Math.min(CLUSTER, n - c);
      if (n < chunk.length) break;
    }
  } finally {
    closeSync(fd);
  }
  return total;
}

/** fsck -fn and the files' checksums, through a read-only loop device over partition 2 of a raw export. */
async function verify(dataFile: string, format: ImageFormat, dir: string, files: Record<string, string>, result: ScaleResult): Promise<void> {
  const raw = join(dir, 'export.raw');
  await tool('qemu-img', ['convert', '-f', format === 'qcow2' ? 'qcow2' : 'parallels', '-O', 'raw', dataFile, raw], { timeoutMs: 60 * 60_000 });
  result.nonZeroBytes = nonZeroBytes(raw);
  const loop = (await tool('losetup', ['--find', '--show', '--read-only', '--offset', String(PART2_START), raw])).stdout.trim();
  const mnt = join(dir, 'mnt');
  try {
    result.fsckClean = (await tool('e2fsck', ['-fn', loop], { ok: [0, 1, 2, 4, 8] })).exitCode === 0;
    await mkdir(mnt, { recursive: true });
    await tool('mount', ['-o', 'ro,noload', loop, mnt]);
    try {
      result.filesIdentical = Object.entries(files).every(([name, sum]) => createHash('sha256').update(readFileSync(join(mnt, name))).digest('hex') === sum)
        && readdirSync(mnt).filter((n) => n.startsWith('d')).length === 10;
    } finally {
      await tool('umount', [mnt]);
    }
  } finally {
    await tool('losetup', ['-d', loop]);
    await rm(raw, { force: true });
  }
}

export async function runScale(ctx: ScaleContext, format: ImageFormat): Promise<ScaleResult> {
  const dir = join(ctx.work, `scale-${format}`);
  await rm(dir, { recursive: true, force: true });
  const ours = join(dir, 'ours');
  const peerDir = join(dir, 'peer');
  await mkdir(ours, { recursive: true });
  await mkdir(peerDir, { recursive: true });
  const began = Date.now();
  const files: Record<string, string> = {};
  const raw = await buildRaw(dir, files);
  const { hdd, dataFile } = await toImage(format, raw, ours);
  await rm(raw, { force: true });
  const result: ScaleResult = { format, buildMs: Date.now() - began, steps: [] };
  result.steps.push({ step: 'built', ok: true, wallMs: 0, writeBytes: 0, allocatedBytes: allocatedBytes(ours) });
  const cli = (...args: string[]): Cmd => ({ argv: [process.execPath, ctx.cli, ...args] });
  const run = async (name: string, cmd: Cmd, folder = ours): Promise<Measurement> => {
    ctx.log(`scale ${format}: ${name}`);
    const m = await measure([cmd], { watch: [folder], env: ctx.env, timeoutMs: 2 * 60 * 60_000 });
    result.steps.push(stepOf(name, m, folder));
    return m;
  };

  if (!(await run('grow to 512 GiB', cli('resize', '--hdd', hdd, '--size', `${GROW / MiB}M`, '--resize_partition'))).ok) return result;
  const info = await run('resize --info', cli('resize', '--info', '--json', '--hdd', hdd));
  if (!info.ok) return result;
  const minimum = (JSON.parse(info.stdout) as { minimum: number }).minimum;
  result.minimumBytes = minimum;
  const target = `${Math.ceil(minimum / MiB)}M`;

  // The peer starts from the same grown image (copied, sparse; the copy is not measured).
  const peerInput = join(peerDir, format === 'qcow2' ? 'in.qcow2' : 'in.hds');
  await tool('cp', ['--sparse=always', '--reflink=never', dataFile, peerInput], { timeoutMs: 60 * 60_000 });

  if (!(await run('shrink to Minimum', cli('resize', '--hdd', hdd, '--size', target, '--resize_partition'))).ok) return result;
  await verify(dataFile, format, dir, files, result);
  await run('compact', cli('compact', '--hdd', hdd));

  const fmt = format === 'qcow2' ? 'qcow2' : 'parallels';
  const out = join(peerDir, 'out.img');
  // The filesystem must end before the GPT's backup at the end of the target disk.
  const fsBytes = Math.ceil(minimum / MiB) * MiB - PART2_START - 2 * MiB;
  ctx.log(`scale ${format}: peer shrink (guestfish resize2fs + virt-resize --shrink)`);
  const peer = await measure(
    [
      { argv: ['guestfish', '--rw', `--format=${fmt}`, '-a', peerInput, 'run', ':', 'e2fsck-f', '/dev/sda2', ':', 'resize2fs-size', '/dev/sda2', String(fsBytes)] },
      { argv: ['qemu-img', 'create', '-q', '-f', fmt, out, target] },
      { argv: ['virt-resize', '--shrink', '/dev/sda2', '--format', fmt, '--output-format', fmt, peerInput, out] },
    ],
    { watch: [peerDir], env: ctx.env, timeoutMs: 2 * 60 * 60_000 },
  );
  result.peer = { ...stepOf('peer shrink', peer, peerDir), outputAllocatedBytes: peer.ok ? statSync(out).blocks * 512 : 0 };
  await rm(dir, { recursive: true, force: true });
  return result;
}

function fmt(n: number): string {
  return n >= GiB ? `${(n / GiB).toFixed(2)} GiB` : n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}

/** Markdown: one table per format, then the check of the bound after the shrink. */
export function renderScale(runs: readonly ScaleResult[]): string {
  const lines: string[] = [];
  for (const r of runs) {
    lines.push(`### ${r.format}: 256 GiB, ${FILES} MiB of files (built in ${(r.buildMs / 1000).toFixed(0)} s, not measured)`, '');
    lines.push('| step | ok | time | host bytes written | host allocation after |', '| --- | --- | --- | --- | --- |');
    for (const s of r.steps) lines.push(`| ${s.step} | ${s.ok ? 'yes' : 'FAILED'} | ${(s.wallMs / 1000).toFixed(1)} s | ${fmt(s.writeBytes)} | ${fmt(s.allocatedBytes)} |`);
    if (r.peer) lines.push(`| peer: guestfish resize2fs + virt-resize --shrink (same grown input) | ${r.peer.ok ? 'yes' : 'FAILED'} | ${(r.peer.wallMs / 1000).toFixed(1)} s | ${fmt(r.peer.writeBytes)} | ${fmt(r.peer.outputAllocatedBytes)} (output image) |`);
    lines.push('');
    const shrink = r.steps.find((s) => s.step === 'shrink to Minimum');
    if (shrink && r.nonZeroBytes !== undefined) {
      const bound = r.nonZeroBytes * 1.05;
      lines.push(
        `After the shrink to Minimum (${fmt(r.minimumBytes ?? 0)}): allocation ${fmt(shrink.allocatedBytes)}; guest clusters (64 KiB) holding a non-zero byte ${fmt(r.nonZeroBytes)}; `
          + `allocation / non-zero content = ${(shrink.allocatedBytes / r.nonZeroBytes).toFixed(3)} (bound: ≤ ${fmt(bound)} plus the image's own metadata); files identical: ${r.filesIdentical ? 'yes' : 'NO'}; fsck clean: ${r.fsckClean ? 'yes' : 'NO'}.`,
        '',
      );
    }
    for (const s of [...r.steps, ...(r.peer ? [r.peer] : [])]) if (s.tail) lines.push(`Failure of "${s.step}":`, '```', s.tail, '```', '');
  }
  return lines.join('\n') + '\n';
}
