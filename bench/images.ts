// The bench's images: scales, one base image per format and filesystem (from the test factory), fresh copies, a chain.
import { mkdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { buildImage, tool, type BuiltImage, type ContentKind, type ImageFormat } from '../test/factory/index.js';

export interface Scale {
  name: 'full' | 'small';
  sizeMiB: number;
  filesMiB: number;
  deletedMiB: number;
  growMiB: number;
  /** Above the minimum: resize2fs -P asks about 4.1 GiB for the full-scale ext4 (2 GiB of files), so 4 GiB is refused. */
  shrinkMiB: number;
  /** Data written into the overlay of the merge --external chain. */
  overlayMiB: number;
}

export const SCALES: Record<Scale['name'], Scale> = {
  full: { name: 'full', sizeMiB: 8192, filesMiB: 2048, deletedMiB: 1024, growMiB: 12288, shrinkMiB: 6144, overlayMiB: 512 },
  small: { name: 'small', sizeMiB: 2048, filesMiB: 512, deletedMiB: 256, growMiB: 3072, shrinkMiB: 1024, overlayMiB: 128 },
};

/** Host bytes a scale needs at most at once (base, two copies, a peer's output, the factory's raw file), with margin. */
export function spaceNeededBytes(scale: Scale): number {
  const data = (scale.filesMiB + scale.deletedMiB) * 1024 * 1024;
  return data * 5 + scale.growMiB * 1024 * 1024;
}

/** Format name for qemu-img and libguestfs. */
export function driveFormat(format: ImageFormat): 'qcow2' | 'parallels' {
  return format === 'qcow2' ? 'qcow2' : 'parallels';
}

export async function buildBase(format: ImageFormat, content: ContentKind, scale: Scale, dir: string): Promise<BuiltImage> {
  return buildImage({
    format,
    table: 'gpt',
    content,
    sizeMiB: scale.sizeMiB,
    filesMiB: scale.filesMiB,
    deletedMiB: scale.deletedMiB,
    dir,
    name: `base-${format}-${content}`,
  });
}

export interface Copy {
  /** Folder holding only this copy (watched for allocation). */
  dir: string;
  /** --hdd for our CLI. */
  hdd: string;
  /** The file the peers open (the qcow2 file or the ploop delta). */
  dataFile: string;
}

/** A fresh copy of the base in its own folder (sparse, never reflinked, so both sides start from equal files). */
export async function copyBase(base: BuiltImage, dir: string): Promise<Copy> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const hdd = join(dir, basename(base.hdd));
  await tool('cp', ['-r', '--sparse=always', '--reflink=never', base.hdd, hdd], { timeoutMs: 60 * 60_000 });
  const dataFile = base.format === 'qcow2' ? hdd : join(hdd, basename(base.dataFile));
  return { dir, hdd, dataFile };
}

/**
 * A two-layer chain in `dir`: base.qcow2 (a copy of the base image) and top.qcow2 over it, holding `overlayMiB` of
 * new data written as a file inside the guest filesystem (so the merged image stays a valid disk).
 */
export async function buildChain(base: BuiltImage, scale: Scale, dir: string): Promise<{ dir: string; top: string }> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await tool('cp', ['--sparse=always', '--reflink=never', base.hdd, join(dir, 'base.qcow2')], { timeoutMs: 60 * 60_000 });
  const top = join(dir, 'top.qcow2');
  // A relative backing name: the pair can be copied to another folder as it is.
  await tool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
  await tool(
    'guestfish',
    ['--rw', '--format=qcow2', '-a', top, 'run', ':', 'mount', '/dev/sda2', '/', ':', 'fill-pattern', 'prl-bench-overlay', String(scale.overlayMiB * 1024 * 1024), '/overlay.bin', ':', 'umount-all'],
    { timeoutMs: 60 * 60_000 },
  );
  return { dir, top };
}

/** Copies a chain folder (relative backing names) to a fresh folder. */
export async function copyChain(chainDir: string, dir: string): Promise<{ dir: string; top: string }> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  for (const name of ['base.qcow2', 'top.qcow2']) {
    await tool('cp', ['--sparse=always', '--reflink=never', join(chainDir, name), join(dir, name)], { timeoutMs: 60 * 60_000 });
  }
  return { dir, top: join(dir, 'top.qcow2') };
}
