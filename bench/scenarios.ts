// The comparisons: for one base image, each operation of ours against its nearest peer, each on its own fresh copy.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuiltImage } from '../test/factory/index.js';
import { buildChain, copyBase, copyChain, driveFormat, type Scale } from './images.js';
import { measure, type Cmd, type Measurement, type StepResult } from './measure.js';

export type Operation = 'resize-info' | 'compact-info' | 'resize-grow' | 'resize-shrink' | 'compact' | 'convert-plain' | 'convert-expanding' | 'merge-external';

export const OPERATIONS: readonly Operation[] = ['resize-info', 'compact-info', 'compact', 'resize-grow', 'resize-shrink', 'convert-plain', 'convert-expanding', 'merge-external'];

export interface Side {
  ok: boolean;
  wallMs: number;
  writeBytes: number;
  peakExtraBytes: number;
  /** Host bytes freed (allocation before − after), for compact. */
  freedBytes: number;
  /** qemu-system processes started. */
  appliances: number;
  /** Ours only: "+ guestfish … (started)" lines in the -v log. */
  guestfishStarts?: number;
  steps: StepResult[];
}

export interface Comparison {
  image: string;
  scale: Scale['name'];
  op: Operation;
  peer: string;
  ours: Side;
  peerSide: Side;
  note?: string;
}

export interface BenchContext {
  cli: string;
  scale: Scale;
  env: Record<string, string>;
  timeoutMs: number;
  log: (line: string) => void;
}

const MiB = 1024 * 1024;

function side(m: Measurement, ours: boolean): Side {
  const s: Side = {
    ok: m.ok,
    wallMs: m.wallMs,
    writeBytes: m.writeBytes,
    peakExtraBytes: Math.max(0, m.peakExtraBytes),
    freedBytes: Math.max(0, -m.finalExtraBytes),
    appliances: m.appliances,
    steps: m.steps,
  };
  // -v lines go to stdout in text mode (docs/cli.md, Output).
  if (ours) s.guestfishStarts = m.stdout.split('\n').filter((line) => /^\+ guestfish\b.*\(started\)/.test(line)).length;
  return s;
}

function asSide(m: Measurement | Side, ours: boolean): Side {
  return 'stderr' in m ? side(m, ours) : m;
}

function skipped(why: string): Side {
  return { ok: false, wallMs: 0, writeBytes: 0, peakExtraBytes: 0, freedBytes: 0, appliances: 0, steps: [{ argv: [], exitCode: null, signal: null, wallMs: 0, tail: why }] };
}

/** Runs every selected comparison for one base image; copies are removed after each. */
export async function runComparisons(ctx: BenchContext, base: BuiltImage, work: string, ops: readonly Operation[]): Promise<Comparison[]> {
  const fmt = driveFormat(base.format);
  const image = `${base.format}/${base.content}`;
  const ours = (...args: string[]): Cmd => ({ argv: [process.execPath, ctx.cli, ...args, '-v'] });
  const run = (cmds: Cmd[], watch: string[]): Promise<Measurement> => measure(cmds, { watch, env: ctx.env, timeoutMs: ctx.timeoutMs });
  const results: Comparison[] = [];
  const record = (op: Operation, peer: string, o: Measurement | Side, p: Measurement | Side, note?: string): void => {
    const c: Comparison = { image, scale: ctx.scale.name, op, peer, ours: asSide(o, true), peerSide: asSide(p, false) };
    if (note !== undefined) c.note = note;
    results.push(c);
    ctx.log(`  ${op}: ours ${c.ours.ok ? (c.ours.wallMs / 1000).toFixed(1) + ' s' : 'FAILED'}, ${peer} ${c.peerSide.ok ? (c.peerSide.wallMs / 1000).toFixed(1) + ' s' : 'failed'}`);
  };
  const a = join(work, 'ours');
  const b = join(work, 'peer');
  const clean = async (): Promise<void> => {
    await rm(a, { recursive: true, force: true });
    await rm(b, { recursive: true, force: true });
  };

  for (const op of ops) {
    try {
      await runOne(op);
    } catch (error) {
      // A set-up failure (copy, chain) is recorded on both sides, never hidden, and the run goes on.
      const why = `set-up failed: ${(error as Error).message}`;
      ctx.log(`  ${op}: ${why}`);
      record(op, 'n/a', skipped(why), skipped(why));
    }
    await clean();
  }
  return results;

  async function runOne(op: Operation): Promise<void> {
    // convert-expanding is measured with convert-plain, on its output; merge --external needs a qcow2 chain.
    if (op === 'convert-expanding' || (op === 'merge-external' && base.format !== 'qcow2')) return;
    ctx.log(`${image}: ${op}`);
    if (op === 'resize-info' || op === 'compact-info') {
      const baseDir = join(base.hdd, '..');
      const o = await run([ours(op === 'resize-info' ? 'resize' : 'compact', '--info', '--hdd', base.hdd)], [baseDir]);
      // guestfish's --format applies to the -a options after it: `-a IMG --format=qcow2` would open a qcow2 as raw.
      const peerCmd: Cmd =
        op === 'resize-info'
          ? { argv: ['guestfish', '--ro', `--format=${fmt}`, '-a', base.dataFile, 'run', ':', 'vfs-minimum-size', '/dev/sda2'] }
          : { argv: ['virt-df', `--format=${fmt}`, '-a', base.dataFile] };
      const p = await run([peerCmd], [baseDir]);
      record(op, op === 'resize-info' ? 'guestfish vfs-minimum-size' : 'virt-df', o, p);
      return;
    }
    if (op === 'merge-external') {
      const chainDir = join(work, 'chain');
      await buildChain(base, ctx.scale, chainDir);
      const x = await copyChain(chainDir, a);
      const o = await run([ours('merge', '--external', '--hdd', x.top)], [a]);
      const y = await copyChain(chainDir, b);
      const p = await run([{ argv: ['qemu-img', 'commit', '-f', 'qcow2', '-t', 'writeback', y.top] }], [b]);
      record(op, 'qemu-img commit', o, p, `overlay holds ${ctx.scale.overlayMiB} MiB of new data`);
      await rm(chainDir, { recursive: true, force: true });
      return;
    }
    const x = await copyBase(base, a);
    const y = await copyBase(base, b);
    const out = join(b, 'out.img');
    if (op === 'compact') {
      const o = await run([ours('compact', '--hdd', x.hdd)], [a]);
      const p = await run([{ argv: ['virt-sparsify', '--in-place', '--format', fmt, y.dataFile] }], [b]);
      record(op, 'virt-sparsify --in-place', o, p);
    } else if (op === 'resize-grow') {
      const o = await run([ours('resize', '--hdd', x.hdd, '--size', `${ctx.scale.growMiB}M`, '--resize_partition')], [a]);
      const p = await run(
        [
          { argv: ['qemu-img', 'create', '-q', '-f', fmt, out, `${ctx.scale.growMiB}M`] },
          { argv: ['virt-resize', '--expand', '/dev/sda2', '--format', fmt, '--output-format', fmt, y.dataFile, out] },
        ],
        [b],
      );
      record(op, 'virt-resize --expand', o, p, `${ctx.scale.sizeMiB} → ${ctx.scale.growMiB} MiB`);
    } else if (op === 'resize-shrink') {
      const o = await run([ours('resize', '--hdd', x.hdd, '--size', `${ctx.scale.shrinkMiB}M`, '--resize_partition')], [a]);
      // virt-resize shrinks partitions, not filesystems: the filesystem is shrunk first with guestfish, as its manual says.
      const fsBytes = (ctx.scale.shrinkMiB - 16) * MiB;
      const shrinkFs =
        base.content === 'ntfs'
          ? ['ntfsresize', '/dev/sda2', `size:${fsBytes}`]
          : ['e2fsck-f', '/dev/sda2', ':', 'resize2fs-size', '/dev/sda2', String(fsBytes)];
      const p = await run(
        [
          { argv: ['guestfish', '--rw', `--format=${fmt}`, '-a', y.dataFile, 'run', ':', ...shrinkFs] },
          { argv: ['qemu-img', 'create', '-q', '-f', fmt, out, `${ctx.scale.shrinkMiB}M`] },
          // After one ntfsresize the volume is marked for chkdsk, and virt-resize's own ntfsresize would refuse it.
          { argv: ['virt-resize', '--shrink', '/dev/sda2', ...(base.content === 'ntfs' ? ['--ntfsresize-force'] : []), '--format', fmt, '--output-format', fmt, y.dataFile, out] },
        ],
        [b],
      );
      record(op, 'guestfish shrink-fs + virt-resize --shrink', o, p, `${ctx.scale.sizeMiB} → ${ctx.scale.shrinkMiB} MiB`);
    } else if (op === 'convert-plain') {
      const copyOpts = fmt === 'qcow2' ? ['-o', 'preallocation=falloc'] : ['-o', 'cluster_size=1048576', '-S', '0'];
      const o = await run([ours('convert', '--plain', '--hdd', x.hdd)], [a]);
      const p = await run([{ argv: ['qemu-img', 'convert', '-f', fmt, '-O', fmt, ...copyOpts, y.dataFile, out] }], [b]);
      record(op, 'qemu-img convert', o, p, fmt === 'qcow2' ? 'preallocation=falloc' : 'ours in place; peer copies with -S 0');
      if (ops.includes('convert-expanding')) {
        ctx.log(`${image}: convert-expanding`);
        const o2 = o.ok ? await run([ours('convert', '--expanding', '--hdd', x.hdd)], [a]) : skipped('convert --plain failed');
        const expOpts = fmt === 'qcow2' ? ['-o', 'preallocation=off'] : ['-o', 'cluster_size=1048576'];
        const p2 = p.ok
          ? await run([{ argv: ['qemu-img', 'convert', '-f', fmt, '-O', fmt, ...expOpts, out, join(b, 'out2.img')] }], [b])
          : skipped('qemu-img convert to plain failed');
        record('convert-expanding', 'qemu-img convert', o2, p2, 'on the plain result of the previous row');
      }
    }
  }
}
