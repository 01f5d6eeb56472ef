// What a delta file occupies on the host, beyond what its BAT says: allocated extents (FIEMAP through filefrag),
// holes inside allocated clusters, and allocating them. The ploop engine's view of the host filesystem.
import { run, CommandFailed } from '../../util/exec.js';
import { fsyncSync } from 'node:fs';
import { normalize, type Range } from '../../util/ranges.js';
import { map } from '../qcow2/qemu-img.js';
import { type Delta, hostBytesOf, requireStillNamed, usedEndBytes } from './delta.js';

/**
 * The delta's allocated host extents. FIEMAP (filefrag) includes unwritten extents, which QEMU's parallels driver
 * and qemu-img convert leave by preallocating; SEEK_DATA (qemu-img map) reports those as holes although they hold
 * host blocks. Where FIEMAP is not available, qemu-img map is the fallback.
 */
export async function hostDataRanges(delta: Delta): Promise<Range[]> {
  const path = delta.path;
  requireStillNamed(delta, 'filefrag');
  try {
    const { stdout } = await run('filefrag', ['-v', '-b512', path], { timeoutMs: 120_000 });
    const extents = [...stdout.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)].map((m) => ({
      start: Number(m[1]) * 512,
      length: (Number(m[2]) - Number(m[1]) + 1) * 512,
    }));
    if (extents.length > 0 || !/extents? found/.test(stdout)) return normalize(extents);
  } catch (error) {
    if (!(error instanceof CommandFailed)) throw error;
  }
  return normalize((await map(path, 'raw')).filter((e) => e.data).map((e) => ({ start: e.start, length: e.length })));
}

/**
 * A delta whose BAT is full can still have holes inside its clusters (a `cp --sparse=always` or `rsync -S` copy):
 * it would not hold the space a plain image promises. st_blocks below the used end of the file shows them.
 */
export function hasHoles(delta: Delta): boolean {
  return hostBytesOf(delta) < usedEndBytes(delta);
}

/** fallocate mode 0 with --keep-size: allocates the holes as unwritten extents; no byte of content changes. */
export async function fillHoles(delta: Delta): Promise<void> {
  requireStillNamed(delta, 'fallocate');
  await run('fallocate', ['--keep-size', '--offset', '0', '--length', String(usedEndBytes(delta)), delta.path], { timeoutMs: 60 * 60_000 });
  fsyncSync(delta.fd);
}
