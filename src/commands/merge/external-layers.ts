// Which lower layers of a chain merge --external may fold in place (commit into, rename, remove) and which it
// must only read. A layer outside the image's own folder (a linked clone's template), one with another name (a
// hard link), one that another file of the folder uses as its backing file, and every layer below such a layer
// may be shared with other images: rewriting, moving or removing it would take their disk away (issue 13, item 8).
import { lstatSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { recordedBackingPath } from '../../formats/qcow2/chain.js';

export type Placement = { own: true } | { own: false; why: string };

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
    const backing = recordedBackingPath(path);
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
