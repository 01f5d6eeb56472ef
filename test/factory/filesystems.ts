// Per-filesystem host tools: make, mount options, read-only check and the size the filesystem spans.
import { open } from 'node:fs/promises';
import { tool, ToolFailed } from './run.js';
import type { ContentKind } from './types.js';

/** A filesystem that holds files (lvm carries ext4 on its last LV; swap holds none). */
export type FsKind = 'ext2' | 'ext3' | 'ext4' | 'ntfs' | 'btrfs' | 'xfs';

export async function makeFs(device: string, kind: FsKind, label: string): Promise<void> {
  switch (kind) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      await tool(`mkfs.${kind}`, ['-F', '-q', '-L', label, '-E', 'nodiscard', device]);
      return;
    case 'xfs':
      await tool('mkfs.xfs', ['-f', '-q', '-K', '-L', label, device]);
      return;
    case 'btrfs':
      await tool('mkfs.btrfs', ['-f', '-q', '-K', '-L', label, device]);
      return;
    case 'ntfs':
      await tool('mkfs.ntfs', ['-Q', '-F', '-q', '-L', label, device]);
      return;
  }
}

/** Mount options that keep deleted data in place: btrfs turns on async discard by default on devices that discard. */
export function mountOptions(kind: FsKind): { ntfs: boolean; options: string[] } {
  if (kind === 'ntfs') return { ntfs: true, options: [] };
  if (kind === 'btrfs') return { ntfs: false, options: ['nodiscard'] };
  return { ntfs: false, options: [] };
}

/** A forced read-only check; returns the checker's report, throws with the tool's output when the filesystem is not clean. */
export async function checkFs(device: string, kind: FsKind): Promise<string> {
  try {
    switch (kind) {
      case 'ext2':
      case 'ext3':
      case 'ext4':
        return (await tool('e2fsck', ['-f', '-n', device])).stdout;
      case 'xfs':
        return (await tool('xfs_repair', ['-n', device])).stderr;
      case 'btrfs': {
        const { stdout, stderr } = await tool('btrfs', ['check', '--readonly', device]);
        return `${stdout}${stderr}`;
      }
      case 'ntfs':
        return await checkNtfs(device);
    }
  } catch (err) {
    if (err instanceof ToolFailed) throw new Error(`${kind} check of ${device} failed: ${err.message}\n${err.stdout.trim()}`);
    throw err;
  }
}

/**
 * ntfsfix -n reads the output, not only the exit code: "Checking the alternate boot sector... OK" must be there
 * (BAD when the backup boot sector is not the device's last sector). ntfsresize --info walks the whole volume and
 * refuses a dirty one; it and ntfsinfo -m must agree on the volume's size (clusters plus the backup boot sector).
 */
async function checkNtfs(device: string): Promise<string> {
  const fix = await tool('ntfsfix', ['-n', device], { ok: [0, 1] });
  const said = `${fix.stdout}${fix.stderr}`;
  if (fix.exitCode !== 0 || !/^Checking the alternate boot sector\.\.\. OK$/m.test(fix.stdout) || /BAD|FAILED|Error/.test(said)) {
    throw new Error(`ntfsfix -n ${device} does not find the volume sound (exit code ${fix.exitCode}):\n${said.trim()}`);
  }
  const resize = await tool('ntfsresize', ['--info', '--no-action', '--no-progress-bar', device]);
  const info = await tool('ntfsinfo', ['-m', device]);
  const volumeBytes = field(resize.stdout, /^Current volume size: (\d+) bytes/m, 'Current volume size');
  const clusters = field(info.stdout, /^\s*Volume Size in Clusters: (\d+)$/m, 'Volume Size in Clusters');
  const clusterBytes = field(info.stdout, /^\s*Cluster Size: (\d+)$/m, 'Cluster Size');
  const sectorBytes = field(info.stdout, /^\s*Sector Size: (\d+)$/m, 'Sector Size');
  if (clusters * clusterBytes + sectorBytes !== volumeBytes) {
    throw new Error(`ntfsinfo -m (${clusters} clusters of ${clusterBytes} bytes) and ntfsresize --info (${volumeBytes} bytes) disagree on the size of ${device}`);
  }
  return fix.stdout;
}

function field(text: string, pattern: RegExp, what: string): number {
  const m = pattern.exec(text);
  if (m === null) throw new Error(`no "${what}" in:\n${text}`);
  return Number(m[1]);
}

/** Bytes the filesystem spans, read from its superblock by the filesystem's own tools. */
export async function fsSizeBytes(device: string, kind: FsKind): Promise<number> {
  switch (kind) {
    case 'ext2':
    case 'ext3':
    case 'ext4': {
      const { stdout } = await tool('dumpe2fs', ['-h', device]);
      return field(stdout, /^Block count:\s+(\d+)$/m, 'Block count') * field(stdout, /^Block size:\s+(\d+)$/m, 'Block size');
    }
    case 'xfs': {
      const { stdout } = await tool('xfs_db', ['-r', '-c', 'sb 0', '-c', 'p dblocks', '-c', 'p blocksize', device]);
      return field(stdout, /^dblocks = (\d+)$/m, 'dblocks') * field(stdout, /^blocksize = (\d+)$/m, 'blocksize');
    }
    case 'btrfs': {
      const { stdout } = await tool('btrfs', ['inspect-internal', 'dump-super', device]);
      // The device item's size is what `btrfs filesystem resize` changes; single-device, so it equals total_bytes.
      return field(stdout, /^dev_item\.total_bytes\s+(\d+)$/m, 'dev_item.total_bytes');
    }
    case 'ntfs': {
      const { stdout } = await tool('ntfsresize', ['--info', '--force', '--no-progress-bar', device]);
      return field(stdout, /^Current volume size: (\d+) bytes/m, 'Current volume size');
    }
  }
}

export interface SwapFacts {
  uuid: string;
  label: string;
  sizeBytes: number;
}

/** Reads a swap area: blkid (low-level probe) for type, UUID, label; the v1 header for its size. */
export async function readSwap(device: string): Promise<SwapFacts> {
  const { stdout } = await tool('blkid', ['-p', '-o', 'export', device], { ok: [0, 2] });
  const vars = Object.fromEntries(stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  if (vars.TYPE !== 'swap') throw new Error(`${device} holds no swap signature (blkid: ${stdout.trim() || 'nothing'})`);
  // struct swap_header_v1_2 (linux/swap.h): 1024 bytes of boot bits, version, last_page, nr_badpages, uuid, label;
  // the page size is where the SWAPSPACE2 magic sits (4096 on x86).
  const fd = await open(device, 'r');
  try {
    const page = Buffer.alloc(4096);
    await fd.read(page, 0, 4096, 0);
    if (page.subarray(4086, 4096).toString('latin1') !== 'SWAPSPACE2') throw new Error(`${device}: no SWAPSPACE2 magic at 4086`);
    const lastPage = page.readUInt32LE(1028);
    return { uuid: vars.UUID ?? '', label: vars.LABEL ?? '', sizeBytes: (lastPage + 1) * 4096 };
  } finally {
    await fd.close();
  }
}

export function isFs(content: ContentKind): content is FsKind {
  return content !== 'swap' && content !== 'lvm';
}
