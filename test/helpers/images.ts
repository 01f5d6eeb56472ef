// Small oracles and builders on qcow2 files for the tests that need no factory image: all through QEMU's tools.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** Runs qemu-io commands on a qcow2 file (`write -P 0x11 0 1M`, …). */
export function qemuIo(file: string, ...commands: string[]): void {
  execFileSync('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
}

export function info(file: string): Record<string, unknown> {
  return JSON.parse(qemuImg('info', '--output=json', '-U', '-f', 'qcow2', file)) as Record<string, unknown>;
}

/** Same guest-visible content, as qemu-img compare sees it. */
export function identical(a: string, b: string): boolean {
  return spawnSync('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', a, b]).status === 0;
}

/** Bytes the file occupies on the host. */
export function allocated(file: string): number {
  return statSync(file).blocks * 512;
}

/** sha256 of every file in the folder (hidden ones too), to prove a refusal changed nothing. */
export function sums(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = createHash('sha256').update(readFileSync(join(dir, name))).digest('hex');
  return out;
}
