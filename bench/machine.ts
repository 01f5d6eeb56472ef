// The machine a run happened on: CPU, cores, RAM, disk, kernel, tool versions, accelerator, load.
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { tool } from '../test/factory/index.js';

export interface Machine {
  cpu: string;
  cores: number;
  ramGiB: number;
  disk: string;
  kernel: string;
  qemu: string;
  qemuImg: string;
  libguestfs: string;
  guestfsTools: string;
  node: string;
  accel: string;
  gitCommit: string;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await tool(cmd, args, { timeoutMs: 30_000 });
    return (stdout || stderr).trim().split('\n')[0] ?? '';
  } catch {
    return `${cmd}: not available`;
  }
}

/** The block device under `dir`: its model, size and whether it rotates (as the kernel reports it). */
async function diskOf(dir: string): Promise<string> {
  try {
    const source = (await tool('findmnt', ['-n', '-o', 'SOURCE', '-T', dir])).stdout.trim();
    const fstype = (await tool('findmnt', ['-n', '-o', 'FSTYPE', '-T', dir])).stdout.trim();
    const parent = (await tool('lsblk', ['-n', '-s', '-o', 'NAME', '-r', source])).stdout.trim().split('\n').pop() ?? source;
    const info = (await tool('lsblk', ['-d', '-n', '-o', 'NAME,SIZE,ROTA,MODEL', `/dev/${parent}`])).stdout.trim().split(/\s+/);
    const [name, size, rota, ...model] = info;
    const kind = rota === '1' ? 'rotational (as reported; a virtio disk reports 1)' : 'non-rotational';
    return `${source} (${fstype}) on /dev/${name}, ${size}, ${kind}${model.length > 0 ? `, ${model.join(' ')}` : ''}`;
  } catch (error) {
    return `unknown (${(error as Error).message.split('\n')[0]})`;
  }
}

export async function describeMachine(workDir: string, repo: string): Promise<Machine> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const backend = process.env.LIBGUESTFS_BACKEND_SETTINGS ?? '';
  return {
    cpu: model.trim(),
    cores: cpus().length,
    ramGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    disk: await diskOf(workDir),
    kernel: release(),
    qemu: await firstLine('qemu-system-x86_64', ['--version']),
    qemuImg: await firstLine('qemu-img', ['--version']),
    libguestfs: await firstLine('guestfish', ['--version']),
    guestfsTools: await firstLine('virt-resize', ['--version']),
    node: process.version,
    accel: backend.includes('force_tcg') ? 'TCG (LIBGUESTFS_BACKEND_SETTINGS=force_tcg, for ours and the peers)' : `libguestfs default (${backend || 'unset'})`,
    gitCommit: (await firstLine('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'])) || 'unknown',
    loadAvgStart: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}
