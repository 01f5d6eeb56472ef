// The tests' own DiskDescriptor.xml writer (independent of src/formats/ploop), for single deltas and chains,
// and a snapshot maker for factory-built ploop folders.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { settleDelta } from './real-ploop-exec.js';
// Layout per QEMU's docs/interop/prl-xml.txt and what the ploop library writes: 16 heads x 32 sectors, so any
// whole MiB is a whole number of cylinders; the top delta conventionally carries TOP_GUID.

export const TOP_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
export const BASE_GUID = '{11111111-2222-3333-4444-555555555555}';
export const ROOT_PARENT = '{00000000-0000-0000-0000-000000000000}';

export interface ShotSpec {
  guid: string;
  file: string;
  parent: string;
  type?: string;
}

export interface DescriptorSpec {
  sizeSectors: number;
  blockSizeSectors: number;
  /** Top first. */
  shots: readonly ShotSpec[];
  /** TopGUID; null leaves the element out, by default the first shot's GUID. */
  top?: string | null;
  preallocated?: boolean;
  /** Raw XML added inside <Snapshots> after the shots (a branch, say). */
  extraShots?: string;
  /** Raw XML added after </Snapshots>. */
  extra?: string;
}

export function descriptorXml(spec: DescriptorSpec): string {
  const images = spec.shots
    .map((s) => `      <Image>\n        <GUID>${s.guid}</GUID>\n        <Type>${s.type ?? 'Compressed'}</Type>\n        <File>${s.file}</File>\n      </Image>`)
    .join('\n');
  const shots = spec.shots.map((s) => `    <Shot>\n      <GUID>${s.guid}</GUID>\n      <ParentGUID>${s.parent}</ParentGUID>\n    </Shot>`).join('\n');
  const top = spec.top === null ? '' : `    <TopGUID>${spec.top ?? spec.shots[0]!.guid}</TopGUID>\n`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters>
    <Disk_size>${spec.sizeSectors}</Disk_size>
    <Cylinders>${Math.floor(spec.sizeSectors / 512)}</Cylinders>
    <Heads>16</Heads>
    <Sectors>32</Sectors>
    <Padding>0</Padding>
    <UID>{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}</UID>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>${spec.sizeSectors}</End>
      <Blocksize>${spec.blockSizeSectors}</Blocksize>
${spec.preallocated ? '      <Preallocated>1</Preallocated>\n' : ''}${images}
    </Storage>
  </StorageData>
  <Snapshots>
${top}${shots}${spec.extraShots ?? ''}
  </Snapshots>${spec.extra ?? ''}
</Parallels_disk_image>
`;
}

/** A chain of delta files (top first) each the parent of the one before, in a descriptor of `sizeMiB` with 1 MiB clusters. */
export function chainDescriptorXml(sizeMiB: number, files: readonly string[], guids: readonly string[], extraShots = ''): string {
  const shots = files.map((file, i) => ({ guid: guids[i]!, file: file.split('/').pop()!, parent: guids[i + 1] ?? ROOT_PARENT }));
  return descriptorXml({ sizeSectors: sizeMiB * 2048, blockSizeSectors: 2048, shots, extraShots });
}

/**
 * Gives a single-delta ploop folder (delta `root.hds`, 1 MiB clusters) one snapshot: a new delta root.hds.top on
 * top, chained in a new descriptor. `data: 'top'` moves the data into the top over a fresh, empty base (so a
 * merge copies all of it down and the top holds everything a compact could free); `data: 'base'` leaves it in
 * the base under an empty top (what a snapshot just taken looks like).
 */
export function addPloopSnapshot(folder: string, sizeMiB: number, data: 'top' | 'base'): { top: string; base: string } {
  const base = join(folder, 'root.hds');
  const top = `${base}.top`;
  const create = (file: string): void => {
    execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', file, `${sizeMiB}M`]);
    settleDelta(file); // QEMU's new delta as ploop would hold it (CIF_Empty set, table area written)
  };
  if (data === 'top') {
    renameSync(base, top);
    create(base);
  } else {
    create(top);
  }
  writeFileSync(join(folder, 'DiskDescriptor.xml'), chainDescriptorXml(sizeMiB, [basename(top), basename(base)], [TOP_GUID, BASE_GUID]));
  return { top, base };
}

/** ploop1_image.h m_DiskInUse while a writer has the delta open ("Ynot"). */
export const IN_USE_OPEN = 0x746f6e59;

export interface DeltaTable {
  magic: string;
  clusterSectors: number;
  sizeSectors: number;
  inUse: number;
  dataOffsetSectors: number;
  bat: number[];
}

/** The test's own reading of a delta's 64-byte header and BAT (parallels.txt offsets), independent of src/. */
export function readDeltaTable(file: string): DeltaTable {
  const fd = openSync(file, 'r');
  try {
    const header = Buffer.alloc(64);
    readSync(fd, header, 0, 64, 0);
    const entries = header.readUInt32LE(32);
    const bat = Buffer.alloc(entries * 4);
    readSync(fd, bat, 0, bat.length, 64);
    return {
      magic: header.toString('latin1', 0, 16),
      clusterSectors: header.readUInt32LE(28),
      sizeSectors: Number(header.readBigUInt64LE(36)),
      inUse: header.readUInt32LE(44),
      dataOffsetSectors: header.readUInt32LE(48),
      bat: Array.from({ length: entries }, (_, i) => bat.readUInt32LE(4 * i)),
    };
  } finally {
    closeSync(fd);
  }
}
