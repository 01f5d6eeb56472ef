// Who else has a ploop image's deltas: the kernel (a running container's ploop device names its deltas in
// sysfs) and processes that hold a delta open for writing. Either means the image is live and must not be
// changed or "recovered" under them.
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { join } from 'node:path';

/**
 * sysfs root; PRL_DISK_TOOL_SYSFS points it elsewhere, for tests only: the development and CI machines have
 * no ploop module, so tests lay out a fake /sys/block/ploopN/pdelta/M/image tree.
 */
export function sysfsRoot(): string {
  return process.env.PRL_DISK_TOOL_SYSFS ?? '/sys';
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function canonical(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/** ploop devices whose deltas include one of `deltas` (real paths), as "/dev/ploopN". */
export function kernelMountsOf(deltas: readonly string[]): string[] {
  const wanted = new Set(deltas);
  const block = join(sysfsRoot(), 'block');
  const devices: string[] = [];
  for (const device of listDir(block).filter((name) => /^ploop\d+$/.test(name))) {
    const pdelta = join(block, device, 'pdelta');
    for (const level of listDir(pdelta)) {
      let image: string;
      try {
        image = readFileSync(join(pdelta, level, 'image'), 'utf8').trim();
      } catch {
        continue;
      }
      if (wanted.has(canonical(image))) {
        devices.push(`/dev/${device}`);
        break;
      }
    }
  }
  return devices;
}

/** O_WRONLY | O_RDWR in /proc/PID/fdinfo's octal "flags:" line. */
function openForWriting(fdinfo: string): boolean {
  const match = /^flags:\s*([0-7]+)/m.exec(fdinfo);
  return match !== null && (parseInt(match[1]!, 8) & 0o3) !== 0;
}

/** Other processes holding one of `deltas` open for writing, as "PID (command)". */
export function writersOf(deltas: readonly string[]): string[] {
  const wanted = new Set(deltas);
  const writers: string[] = [];
  for (const pid of listDir('/proc').filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)) {
    for (const fd of listDir(`/proc/${pid}/fd`)) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!wanted.has(target)) continue;
      let info = '';
      try {
        info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      } catch {
        continue;
      }
      if (!openForWriting(info)) continue;
      let command = '?';
      try {
        command = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        // The process may have exited meanwhile; its pid still says who it was.
      }
      writers.push(`${pid} (${command})`);
      break;
    }
  }
  return writers;
}
