// Which lower layers of a chain merge --external may fold in place (commit into, rename, remove) and which it
// must only read. A layer outside the image's own folder (a linked clone's template), one with another name (a
// hard link), one that another file of the folder uses as its backing file, and every layer below such a layer
// may be shared with other images: rewriting, moving or removing it would take their disk away (issue 13, item 8).
import { closeSync, constants, lstatSync, openSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { readFully } from '../../util/file-io.js';

export type Placement = { own: true } | { own: false; why: string };

const QCOW2_MAGIC = 0x514649fb;
/** QEMU's qcow2 spec caps the backing file name at 1023 bytes. */
const MAX_BACKING_NAME = 1023;

/**
 * The backing file a qcow2 file of the folder names, resolved against the folder, without following any link and
 * without blocking (the file is checked to be regular first, and opened O_NONBLOCK|O_NOFOLLOW in case it changed).
 */
function backingNamedBy(path: string): string | undefined {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat === undefined || !stat.isFile() || stat.size < 72) return undefined;
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    // Header fields (docs/interop/qcow2.txt): magic at 0, backing_file_offset (u64) at 8, backing_file_size (u32) at 16.
    const header = readFully(fd, 20, 0);
    if (header.length < 20 || header.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
    const offset = header.readBigUInt64BE(8);
    const size = header.readUInt32BE(16);
    if (offset === 0n || size === 0 || size > MAX_BACKING_NAME || offset > BigInt(stat.size)) return undefined;
    const name = readFully(fd, size, Number(offset)).toString('utf8');
    return name.includes(':') && !name.startsWith('/') ? undefined : resolve(dirname(path), name);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * For each lower layer (chain top first, paths absolute without symlinks), whether it belongs to the image alone.
 * The top's own folder is listed once; files of the chain itself do not count as other users.
 */
export function placeLayers(chain: readonly string[]): Placement[] {
  const top = chain[0]!;
  const folder = dirname(top);
  const members = new Set(chain);
  const namedByOthers = new Map<string, string>();
  for (const name of readdirSync(folder)) {
    const path = join(folder, name);
    if (members.has(path)) continue;
    const backing = backingNamedBy(path);
    if (backing !== undefined && !namedByOthers.has(backing)) namedByOthers.set(backing, path);
  }
  const out: Placement[] = [];
  let sharedAbove: string | undefined;
  for (const path of chain.slice(1)) {
    const stat = lstatSync(path);
    let why: string | undefined;
    if (sharedAbove !== undefined) why = `it lies below the shared layer ${sharedAbove}`;
    else if (dirname(path) !== folder) why = `it lives outside the image's folder ${folder} (a template or another image's file)`;
    else if (stat.nlink > 1) why = 'it has other names (hard links)';
    else if (namedByOthers.has(path)) why = `${namedByOthers.get(path)} uses it as its backing file`;
    if (why === undefined) out.push({ own: true });
    else {
      sharedAbove ??= path;
      out.push({ own: false, why });
    }
  }
  return out;
}
