// Other processes holding an image, as a running VM or another prl_disk_tool would; each returns its release.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Keeps a file open read-write in qemu-io, which holds QEMU's image lock like a running VM. */
export function holdOpen(file: string, format: 'qcow2' | 'parallels' = 'qcow2'): () => void {
  const child = spawn('qemu-io', ['-f', format, file], { stdio: ['pipe', 'ignore', 'ignore'] });
  return () => {
    child.stdin!.end('quit\n');
    child.kill('SIGKILL');
  };
}

/** Holds an exclusive flock on the file (for ploop: DiskDescriptor.xml.lck) as another prl_disk_tool would. */
export function holdFlock(file: string): () => void {
  const child = spawn('flock', ['-x', file, 'sleep', '60'], { stdio: 'ignore' });
  return () => child.kill('SIGKILL');
}

/**
 * Starts a paused VM on the file and waits until it holds QEMU's image lock, which is when qemu-img info (without
 * -U) can no longer open the file. That probe briefly holds a read lock itself, so a VM opening its drive at the
 * same instant can fail with "Failed to get "write" lock": it is then started again.
 */
export async function startPausedVm(file: string, fmt: 'qcow2' | 'parallels'): Promise<ChildProcess> {
  for (let attempt = 1; ; attempt++) {
    const qemu = spawn('qemu-system-x86_64', ['-machine', 'accel=tcg', '-display', 'none', '-S', '-monitor', 'none', '-serial', 'none', '-nodefaults', '-drive', `file=${file},format=${fmt},if=virtio`], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let qemuErr = '';
    qemu.stderr!.setEncoding('utf8').on('data', (c: string) => (qemuErr += c));
    for (let i = 0; i < 300 && qemu.exitCode === null && spawnSync('qemu-img', ['info', '-f', fmt, file]).status === 0; i++) await sleep(100);
    await sleep(200); // let an exit that raced the last probe be seen
    if (qemu.exitCode === null) return qemu;
    if (attempt === 3 || !/Failed to get .*lock/.test(qemuErr)) throw new Error(`qemu exited: ${qemuErr}`);
  }
}

/**
 * Waits until a holder has taken QEMU's write permission lock on `file`: an OFD lock on byte 101 (QEMU's
 * RAW_LOCK_PERM_BASE + the write permission bit) of its inode, read from /proc/locks. Probing with qemu-img info
 * instead would take a lock itself, and a holder opening at that instant fails and exits (seen under load).
 */
export async function waitHeld(file: string): Promise<void> {
  const { dev, ino } = statSync(file);
  const device = `${((dev >> 8) & 0xfff).toString(16).padStart(2, '0')}:${((dev & 0xff) | ((dev >> 12) & 0xfff00)).toString(16).padStart(2, '0')}`;
  // The kernel merges adjacent ranges ("100 101"), so the line's range must cover byte 101.
  const lock = new RegExp(`^\\d+: OFDLCK +ADVISORY +\\w+ +\\S+ ${device}:${ino} (\\d+) (\\d+)$`, 'gm');
  const covers101 = (): boolean => [...readFileSync('/proc/locks', 'utf8').matchAll(lock)].some((m) => Number(m[1]) <= 101 && Number(m[2]) >= 101);
  for (let i = 0; i < 600; i++) {
    if (covers101()) return;
    await sleep(100);
  }
  throw new Error(`nothing took QEMU's write lock on ${file} after 600 looks at /proc/locks`);
}
