// What a crash state must hold by itself, before any rerun (issue 26, class 3): the rerun repairs some wrong
// orders, so a state is also judged as a power cut leaves it. Each state is either consistent on its own, or
// recognisably an interrupted run that the next command completes (a ploop delta with the in-use mark, a temp file).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readDescriptor } from '../factory/ploop.js';
import { IN_USE_OPEN, readDeltaTable } from '../helpers/ploop.js';

/**
 * Everything wrong with a crash state by itself. `files` lists a root's files (relative names); an image file is
 * one the pristine image or the completed run has (other files are a run's temp files: an interrupted run).
 * - every file both the pristine image and the completed run have still exists;
 * - every image file: a ploop delta with the in-use mark is an interrupted run (our recovery's business); any
 *   other passes `qemu-img check` (exit 0, or 3: leaked clusters only, which lose nothing), or, for qcow2, its only
 *   errors are wrong OFLAG_COPIED bits (an interrupted snapshot deletion, which merge completes);
 * - ploop: the descriptor reads, names existing deltas, and its Preallocated and Blocksize agree with a top delta
 *   that is not in use (a Preallocated descriptor over holes is not an interrupted run anything recognises).
 */
export function crashStateProblems(format: 'qcow2' | 'ploop', hdd: string, stateRoot: string, pristine: readonly string[], reference: readonly string[]): string[] {
  const out: string[] = [];
  const referenceSet = new Set(reference);
  for (const name of pristine.filter((n) => referenceSet.has(n) && !n.endsWith('.lck'))) {
    if (!existsSync(join(stateRoot, name))) out.push(`${name} is missing`);
  }
  const fmt = format === 'qcow2' ? 'qcow2' : 'parallels';
  const images = [...new Set([...pristine, ...reference])].filter((n) => /\.(hds|qcow2)$|\.hds\./.test(n) && existsSync(join(stateRoot, n)));
  for (const name of images) {
    const path = join(stateRoot, name);
    if (format === 'ploop' && readDeltaTable(path).inUse === IN_USE_OPEN) continue;
    const check = spawnSync('qemu-img', ['check', '-U', '-f', fmt, path], { encoding: 'utf8' });
    if (check.status === 0 || check.status === 3) continue;
    // qemu-img snapshot -d cut short leaves wrong OFLAG_COPIED bits and nothing else: merge recognises exactly that
    // state and repairs it (docs/reliability.md, B16); any other error is damage.
    const errors = check.stdout.split('\n').concat(check.stderr.split('\n')).filter((line) => /^ERROR/.test(line));
    const onlyCopiedFlags = format === 'qcow2' && errors.length > 0 && errors.every((line) => /^ERROR OFLAG_COPIED (data|L2) cluster: /.test(line));
    if (!onlyCopiedFlags) out.push(`qemu-img check ${name} exits ${check.status}: ${(errors.length > 0 ? errors : (check.stdout + check.stderr).trim().split('\n')).slice(0, 3).join(' | ')}`);
  }
  if (format === 'ploop') {
    try {
      const descriptor = readDescriptor(hdd);
      const missing = descriptor.chain.filter((file) => !existsSync(file));
      if (missing.length > 0) out.push(`DiskDescriptor.xml names missing deltas: ${missing.join(', ')}`);
      else {
        const top = readDeltaTable(descriptor.chain[0]!);
        if (top.inUse !== IN_USE_OPEN) {
          const holes = top.bat.filter((entry) => entry === 0).length;
          if (descriptor.preallocated && holes > 0) out.push(`DiskDescriptor.xml says Preallocated while the top delta has ${holes} unallocated clusters and no in-use mark`);
          if (descriptor.blocksizeSectors !== top.clusterSectors) out.push(`Blocksize ${descriptor.blocksizeSectors} is not the delta's cluster size ${top.clusterSectors}`);
        }
      }
    } catch (error) {
      out.push(`DiskDescriptor.xml: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  return out;
}
