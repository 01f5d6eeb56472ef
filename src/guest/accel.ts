// Remembers whether this host's appliance needs TCG, so only the first command pays for a failed KVM start.
import { readFileSync, statSync, mkdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';

export type Accel = 'kvm' | 'tcg';

const QEMU_BINARY = '/usr/bin/qemu-system-x86_64';

function cacheFile(): string {
  const base = process.env.PRL_DISK_TOOL_CACHE_DIR ?? (process.env.XDG_CACHE_HOME ? join(process.env.XDG_CACHE_HOME, 'prl-disk-tool') : '/var/cache/prl-disk-tool');
  return join(base, 'appliance-accel.json');
}

/** What invalidates the cached outcome: a new kernel or a new qemu binary. */
function hostKey(): string {
  let qemu = 'missing';
  try {
    const stat = statSync(QEMU_BINARY);
    qemu = `${stat.size}:${Math.floor(stat.mtimeMs)}`;
  } catch {
    // No qemu: the appliance will fail on its own with a clear message.
  }
  return `${release()}|${qemu}`;
}

export function cachedAccel(): Accel | undefined {
  try {
    const record = JSON.parse(readFileSync(cacheFile(), 'utf8')) as { key?: unknown; accel?: unknown };
    if (record.key === hostKey() && (record.accel === 'kvm' || record.accel === 'tcg')) return record.accel;
  } catch {
    // No cache yet, or unreadable: treat as unknown.
  }
  return undefined;
}

export function rememberAccel(accel: Accel): void {
  try {
    const file = cacheFile();
    mkdirSync(join(file, '..'), { recursive: true });
    writeFileAtomic(file, JSON.stringify({ key: hostKey(), accel }) + '\n');
  } catch {
    // A cache we cannot write only costs time on the next run.
  }
}
