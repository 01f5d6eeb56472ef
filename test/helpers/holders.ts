// Other processes holding an image, as a running VM or another prl_disk_tool would; each returns its release.
import { spawn } from 'node:child_process';

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
