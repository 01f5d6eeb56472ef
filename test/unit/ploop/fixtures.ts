// Test helpers: ploop folders made with qemu-img/qemu-io and a hand-written DiskDescriptor.xml.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TOP_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
export const BASE_GUID = '{11111111-2222-3333-4444-555555555555}';
export const ROOT_PARENT = '{00000000-0000-0000-0000-000000000000}';

export function tempDir(prefix = 'ploop-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

const env = { ...process.env, LC_ALL: 'C' };

export function qemuImg(args: string[]): string {
  return execFileSync('qemu-img', args, { env, encoding: 'utf8' });
}

export function qemuCreate(path: string, sizeBytes: number, clusterBytes: number): void {
  qemuImg(['create', '-q', '-f', 'parallels', '-o', `cluster_size=${clusterBytes}`, path, String(sizeBytes)]);
}

/** Each command like `write -P 0xab 0 1M`. */
export function qemuIo(path: string, commands: string[], readOnly = false): string {
  const args = ['-f', 'parallels', ...(readOnly ? ['-r'] : [])];
  for (const c of commands) args.push('-c', c);
  return execFileSync('qemu-io', [...args, path], { env, encoding: 'utf8' });
}

export function qemuCheck(path: string): { status: number; output: string } {
  const r = spawnSync('qemu-img', ['check', '-f', 'parallels', path], { env, encoding: 'utf8' });
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

/** QEMU's own reading of a delta (read-only, so it works even with the in-use mark set). */
export function qemuReadRaw(path: string, dir: string): Buffer {
  const out = join(dir, `raw-${Math.random().toString(16).slice(2)}.img`);
  qemuImg(['convert', '-f', 'parallels', '-O', 'raw', path, out]);
  const data = readFileSync(out);
  rmSync(out);
  return data;
}

export interface ShotSpec {
  guid: string;
  file: string;
  parent: string;
  type?: string;
}

export function descriptorXml(options: { sizeSectors: number; blockSizeSectors: number; shots: ShotSpec[]; top?: string | null; preallocated?: boolean; extra?: string }): string {
  const images = options.shots
    .map((s) => `      <Image>\n        <GUID>${s.guid}</GUID>\n        <Type>${s.type ?? 'Compressed'}</Type>\n        <File>${s.file}</File>\n      </Image>`)
    .join('\n');
  const shots = options.shots.map((s) => `    <Shot>\n      <GUID>${s.guid}</GUID>\n      <ParentGUID>${s.parent}</ParentGUID>\n    </Shot>`).join('\n');
  const top = options.top === null ? '' : `    <TopGUID>${options.top ?? options.shots[0]!.guid}</TopGUID>\n`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters>
    <Disk_size>${options.sizeSectors}</Disk_size>
    <Cylinders>${Math.floor(options.sizeSectors / 512)}</Cylinders>
    <Heads>16</Heads>
    <Sectors>32</Sectors>
    <Padding>0</Padding>
    <UID>{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}</UID>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>${options.sizeSectors}</End>
      <Blocksize>${options.blockSizeSectors}</Blocksize>
${options.preallocated ? '      <Preallocated>1</Preallocated>\n' : ''}${images}
    </Storage>
  </StorageData>
  <Snapshots>
${top}${shots}
  </Snapshots>${options.extra ?? ''}
</Parallels_disk_image>
`;
}

/** A single-delta ploop folder: root.hds made by qemu-img, patterns written by qemu-io. */
export function makePloop(dir: string, sizeBytes: number, clusterBytes: number, writes: string[] = []): string {
  const delta = join(dir, 'root.hds');
  qemuCreate(delta, sizeBytes, clusterBytes);
  if (writes.length > 0) qemuIo(delta, writes);
  writeFileSync(
    join(dir, 'DiskDescriptor.xml'),
    descriptorXml({ sizeSectors: sizeBytes / 512, blockSizeSectors: clusterBytes / 512, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }),
  );
  return delta;
}
