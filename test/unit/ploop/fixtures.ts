// Test helpers: ploop folders made with qemu-img/qemu-io and a hand-written DiskDescriptor.xml.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ROOT_PARENT, TOP_GUID, descriptorXml } from '../../helpers/ploop.js';

export { BASE_GUID, ROOT_PARENT, TOP_GUID, descriptorXml, type ShotSpec } from '../../helpers/ploop.js';

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
