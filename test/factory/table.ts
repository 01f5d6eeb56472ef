// Partition tables: the layouts the factory writes (sfdisk scripts) and the independent reader (sfdisk -J, sgdisk -v).
import { createHash } from 'node:crypto';
import { tool, ToolFailed } from './run.js';
import type { ContentKind, PartitionInfo, TableKind } from './types.js';

export interface SfdiskPartition {
  node: string;
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
  attrs?: string;
  bootable?: boolean;
}

/** `sfdisk -J` output, as util-linux prints it (sectors of 512 bytes). */
export interface SfdiskTable {
  label: 'gpt' | 'dos';
  id: string;
  device: string;
  unit: string;
  firstlba?: number;
  lastlba?: number;
  sectorsize: number;
  partitions: SfdiskPartition[];
}

export interface TableReading {
  table: SfdiskTable | null;
  /** Full `sgdisk -v` output, for GPT only. */
  sgdiskVerify?: string;
  /** One sentence per problem found (sgdisk complaints); empty when sound. */
  problems: string[];
}

export const SECTOR = 512;
/** First partition: 8 MiB at 1 MiB. The last partition starts at 9 MiB (logical: see layoutScript). */
export const FIRST_START = 2048;
export const FIRST_SIZE = 16384;
export const GPT_LAST_NAME = 'prl test data';
export const GPT_LAST_ATTRS = 'GUID:60';
const BIOS_BOOT = '21686148-6449-6E6F-744E-656564454649';

const GPT_TYPE: Record<ContentKind, string> = {
  ext2: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  ext3: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  ext4: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  btrfs: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  xfs: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  ntfs: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  swap: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  lvm: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
};
const MBR_TYPE: Record<ContentKind, string> = {
  ext2: '83', ext3: '83', ext4: '83', btrfs: '83', xfs: '83', ntfs: '7', swap: '82', lvm: '8e',
};

/** A GUID derived from the seed, so that a rebuilt image is identical. */
export function seededGuid(seed: number, what: string): string {
  const h = createHash('sha256').update(`prl-factory-guid:${seed}:${what}`).digest('hex');
  // Version 4 / variant 1 bits, so that tools that check them are happy.
  const v = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  return v.toUpperCase();
}

/** The sfdisk script for a table kind; null for 'none'. */
export function layoutScript(table: TableKind, content: ContentKind, seed: number): string | null {
  const first = `start=${FIRST_START}, size=${FIRST_SIZE}`;
  const lastStart = FIRST_START + FIRST_SIZE;
  switch (table) {
    case 'none':
      return null;
    case 'gpt':
      return [
        'label: gpt',
        `label-id: ${seededGuid(seed, 'disk')}`,
        `${first}, type=${BIOS_BOOT}, uuid=${seededGuid(seed, 'p1')}, name="bios boot"`,
        `start=${lastStart}, type=${GPT_TYPE[content]}, uuid=${seededGuid(seed, 'p2')}, name="${GPT_LAST_NAME}", attrs="${GPT_LAST_ATTRS}"`,
        '',
      ].join('\n');
    case 'mbr':
      return [
        'label: dos',
        `label-id: 0x${seededGuid(seed, 'disk').slice(0, 8).toLowerCase()}`,
        `${first}, type=83`,
        `start=${lastStart}, type=${MBR_TYPE[content]}, bootable`,
        '',
      ].join('\n');
    case 'logical':
      // Extended container from 9 MiB to the end; logical 5 (8 MiB), then logical 6 to the end (sfdisk aligns each
      // logical partition to 1 MiB after its EBR).
      return [
        'label: dos',
        `label-id: 0x${seededGuid(seed, 'disk').slice(0, 8).toLowerCase()}`,
        `${first}, type=83`,
        `start=${lastStart}, type=5`,
        `size=${FIRST_SIZE}, type=83`,
        `type=${MBR_TYPE[content]}`,
        '',
      ].join('\n');
  }
}

export async function writeTable(raw: string, script: string): Promise<void> {
  await tool('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', raw], { input: script });
}

/** Reads the table of a raw disk file: sfdisk -J, and sgdisk -v for GPT. A disk without a table gives null. */
export async function readPartitionTable(raw: string): Promise<TableReading> {
  let json: string;
  try {
    json = (await tool('sfdisk', ['-J', raw])).stdout;
  } catch (err) {
    if (err instanceof ToolFailed && /does not contain a recognized partition table/.test(err.stderr)) {
      return { table: null, problems: [] };
    }
    throw err;
  }
  const parsed = JSON.parse(json) as { partitiontable?: SfdiskTable };
  const table = parsed.partitiontable;
  if (table === undefined) throw new Error(`sfdisk -J ${raw} printed no partitiontable`);
  table.partitions ??= [];
  // An NTFS boot sector ends in 55 AA, so sfdisk sees an empty MBR on a whole-disk NTFS; blkid knows better.
  if (table.label === 'dos' && table.partitions.length === 0 && (await wholeDiskContent(raw)) !== null) {
    return { table: null, problems: [] };
  }
  const problems: string[] = [];
  if (table.label !== 'gpt') return { table, problems };
  const verify = await tool('sgdisk', ['-v', raw], { ok: [0, 1, 2, 3, 4, 5, 6, 7, 8] });
  const text = `${verify.stdout}${verify.stderr}`;
  if (!/No problems found/.test(text) || verify.exitCode !== 0) {
    problems.push(`sgdisk -v reports problems (exit code ${verify.exitCode}):\n${text.trim()}`);
  }
  return { table, sgdiskVerify: text, problems };
}

/** The TYPE blkid finds on the whole disk when no partition table is there (a filesystem, swap, an LVM PV). */
async function wholeDiskContent(raw: string): Promise<string | null> {
  const { stdout } = await tool('blkid', ['-p', '-o', 'export', raw], { ok: [0, 2] });
  if (/^PTTYPE=/m.test(stdout)) return null;
  return /^TYPE=(.*)$/m.exec(stdout)?.[1] ?? null;
}

export function partitionNumber(table: SfdiskTable, p: SfdiskPartition): number {
  const m = /(\d+)$/.exec(p.node.slice(table.device.length));
  if (m === null) throw new Error(`cannot tell the number of partition ${p.node}`);
  return Number(m[1]);
}

/** Extended containers (MBR types 5, f, 85) hold logical partitions; they are never "the last partition". */
export function isExtended(table: SfdiskTable, p: SfdiskPartition): boolean {
  return table.label === 'dos' && ['5', 'f', '85'].includes(p.type.toLowerCase());
}

export function toPartitionInfo(table: SfdiskTable): PartitionInfo[] {
  return table.partitions.map((p) => {
    const info: PartitionInfo = { number: partitionNumber(table, p), startSector: p.start, sizeSectors: p.size, typeId: p.type };
    if (p.uuid !== undefined) info.uuid = p.uuid;
    if (p.name !== undefined) info.name = p.name;
    if (p.attrs !== undefined) info.attrs = p.attrs;
    if (p.bootable !== undefined) info.bootable = p.bootable;
    return info;
  });
}

/** The partition that ends last on the disk, extended containers excepted. */
export function lastPartition(table: SfdiskTable): SfdiskPartition {
  const data = table.partitions.filter((p) => !isExtended(table, p));
  if (data.length === 0) throw new Error('the partition table holds no data partition');
  return data.reduce((a, b) => (b.start + b.size > a.start + a.size ? b : a));
}
