// Host kernel helpers for tests only: loop devices over byte ranges of a raw file, and mounts, each undone by a scope.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Scope, tool } from './run.js';

export interface LoopRange {
  offsetBytes: number;
  sizeBytes: number;
}

/**
 * Attaches `file` (or a byte range of it) to a free loop device and detaches it when the scope closes.
 * `losetup -P` makes no partition nodes here (no udev), hence one device per range.
 */
export async function attachLoop(scope: Scope, file: string, range?: LoopRange, readOnly = false): Promise<string> {
  const args = ['-f', '--show'];
  if (readOnly) args.push('-r');
  if (range !== undefined) args.push('-o', String(range.offsetBytes), '--sizelimit', String(range.sizeBytes));
  args.push(file);
  const { stdout } = await tool('losetup', args);
  const device = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup printed no loop device: ${JSON.stringify(stdout)}`);
  scope.defer(`detach ${device}`, () => detachLoop(device));
  return device;
}

/**
 * Detaches and waits until the kernel has really let go: a FUSE daemon (ntfs-3g) may still hold the device after
 * umount returns, and `losetup -d` then only sets autoclear; the raw file must not be read before that.
 */
export async function detachLoop(device: string): Promise<void> {
  const sys = `/sys/block/${device.slice('/dev/'.length)}/loop/backing_file`;
  await tool('losetup', ['-d', device], { ok: [0, 1] });
  for (let i = 0; i < 200; i++) {
    if (!existsSync(sys)) return;
    await sleep(50);
  }
  throw new Error(`${device} is still attached 10 s after losetup -d`);
}

export interface MountOptions {
  readOnly?: boolean;
  /** Mount with ntfs-3g (FUSE) instead of the kernel. */
  ntfs?: boolean;
  options?: string[];
}

/** Mounts `device` on a new folder under `parent`, unmounted when the scope closes. */
export async function mountDevice(scope: Scope, device: string, parent: string, options: MountOptions = {}): Promise<string> {
  const target = join(parent, `mnt-${device.slice('/dev/'.length)}`);
  await mkdir(target, { recursive: true });
  const opts = [...(options.readOnly === true ? ['ro'] : []), ...(options.options ?? [])];
  if (options.ntfs === true) {
    await tool('ntfs-3g', [...(opts.length > 0 ? ['-o', opts.join(',')] : []), device, target]);
  } else {
    await tool('mount', [...(opts.length > 0 ? ['-o', opts.join(',')] : []), device, target]);
  }
  scope.defer(`umount ${target}`, () => unmount(target));
  return target;
}

async function unmount(target: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await tool('umount', [target]);
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await sleep(250);
    }
  }
}
