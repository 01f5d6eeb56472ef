// Reads a qcow2 backing chain one file at a time with the format always named: a layer whose backing
// format is not recorded is refused instead of letting qemu-img probe it.
import { realpathSync } from 'node:fs';
import { decodeInfo, isLockFailure, qemuImg } from './qemu-img.js';
import { CommandFailed } from '../../util/exec.js';
import { probeReadWriteOpen } from './qemu-io.js';
import type { ChainLayer } from './chain.js';
import { ImageInvalid, NotSupported, Refused, ToolError } from '../../util/errors.js';

export interface Layer {
  /** Absolute, symlinks resolved. */
  path: string;
  virtualSizeBytes: number;
  dirty: boolean;
  corrupt: boolean;
  snapshots: number;
  /** Guest bytes per cluster. */
  clusterBytes: number;
  /** qcow2 v3 (compat 1.1): a cluster can read as zeros without holding data (v2 has no zero clusters). */
  zeroClusters: boolean;
  backingPath?: string;
  /** Extra features that make the layer unsuitable as the merged image (external data file, encryption). */
  unsupported?: string;
}

const MAX_CHAIN = 64;

function parseLayer(path: string, stdout: string): Layer & { backingFilename?: string; backingFormat?: string } {
  const raw = JSON.parse(stdout) as Record<string, unknown>;
  if (raw.format !== 'qcow2') throw new ImageInvalid(`"${path}" is not a qcow2 image`);
  const info = decodeInfo(raw);
  const specific = ((raw['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {}) as Record<string, unknown>;
  const layer: Layer & { backingFilename?: string; backingFormat?: string } = {
    path,
    virtualSizeBytes: info.virtualSize,
    dirty: info.dirty,
    corrupt: info.corrupt,
    snapshots: info.snapshots.length,
    clusterBytes: info.clusterSize ?? 65536,
    zeroClusters: specific.compat === '1.1',
  };
  if (typeof specific['data-file'] === 'string') layer.unsupported = `an external data file (${specific['data-file']})`;
  else if (raw.encrypted === true || specific.encrypt !== undefined) layer.unsupported = 'encryption';
  if (info.backingFilename !== undefined) layer.backingFilename = info.backingFilename;
  if (info.backingFormat !== undefined) layer.backingFormat = info.backingFormat;
  if (info.fullBackingFilename !== undefined) layer.backingPath = info.fullBackingFilename;
  return layer;
}

/** qemu-img info of one file, without opening its backing file; `shareLock` false also detects a VM holding it. */
export async function readLayer(path: string, shareLock: boolean): Promise<ReturnType<typeof parseLayer>> {
  const args = ['info', '--output=json', '-f', 'qcow2'];
  if (shareLock) args.push('-U');
  try {
    return parseLayer(path, await qemuImg([...args, path], { timeoutMs: 120_000 }));
  } catch (error) {
    if (isLockFailure(error)) {
      throw new ToolError('in-use', `The disk image "${path}" of the backing chain is in use by a running virtual machine; stop it first.`);
    }
    if (error instanceof CommandFailed) {
      throw new ImageInvalid(`"${path}" cannot be opened as a qcow2 image (${error.stderr.trim().split('\n').pop() ?? 'qemu-img failed'})`);
    }
    throw error;
  }
}

/** The chain from `top` down to its base, top first. */
export async function readChain(top: string): Promise<Layer[]> {
  const chain: Layer[] = [];
  const seen = new Set<string>();
  let path = realpathSync(top);
  for (;;) {
    if (seen.has(path)) throw new ImageInvalid(`The backing chain of "${top}" loops back to "${path}"`);
    if (chain.length >= MAX_CHAIN) throw new NotSupported(`The backing chain of "${top}" is longer than ${MAX_CHAIN} files.`);
    seen.add(path);
    const layer = await readLayer(path, true);
    chain.push(layer);
    if (layer.backingFilename === undefined) break;
    if (layer.backingFormat === undefined) {
      throw new Refused(
        `"${path}" names its backing file "${layer.backingFilename}" without its format, and probing a format is unsafe; if the backing file is qcow2, record it with "qemu-img rebase -u -f qcow2 -F qcow2 -b '${layer.backingFilename}' '${path}'" and try again. Nothing was changed.`,
      );
    }
    if (layer.backingFormat !== 'qcow2') {
      throw new NotSupported(`"${path}" has a ${layer.backingFormat} backing file ("${layer.backingFilename}"); merge --external only folds qcow2 chains. Nothing was changed.`);
    }
    if (layer.backingPath === undefined) throw new ToolError('tool-failed', `qemu-img info did not resolve the backing file of "${path}".`);
    try {
      path = realpathSync(layer.backingPath);
    } catch {
      throw new ImageInvalid(`The backing file "${layer.backingPath}" of "${layer.path}" is missing`);
    }
  }
  return chain;
}

/**
 * A backing file outside the image's folder that a running QEMU holds for writing is somebody's live disk, not a
 * template: refused in every mode, queries included (their numbers would come from a disk changing under them).
 * qemu-img info without -U takes a read lock, which conflicts with a writer only; a VM that uses the file as its
 * own backing file merely reads it and does not conflict.
 */
export async function refuseLiveOutsideLayers(layers: readonly ChainLayer[], hdd: string): Promise<void> {
  for (const layer of layers) {
    if (layer.insideFolder || layer.format !== 'qcow2') continue;
    try {
      await readLayer(layer.realPath, false);
    } catch (error) {
      if (!(error instanceof ToolError) || error.kind !== 'in-use') throw error;
      throw new ToolError(
        'in-use',
        `The backing file "${layer.realPath}" of "${hdd}" is open for writing by a running virtual machine: it is that machine's live disk, not a template. Stop that machine or rebase "${hdd}" onto a real template. Nothing was changed.`,
      );
    }
  }
}

export function inUseByOther(path: string): ToolError {
  return new ToolError(
    'in-use',
    `The disk image "${path}" of the backing chain is in use by a running virtual machine (perhaps as the backing file of another image); stop it first. Nothing was changed.`,
  );
}

/**
 * A VM that uses `path` as its backing file only reads it, so a read-only open (qemu-img info) does not
 * conflict; but it forbids writers, so a read-write open does. qemu-io opening a clean qcow2 read-write
 * and quitting writes nothing (the caller skips dirty images, whose open would repair refcounts).
 */
export async function requireNoWriterConflict(path: string): Promise<void> {
  try {
    await probeReadWriteOpen(path);
  } catch (error) {
    if (isLockFailure(error)) throw inUseByOther(path);
    throw error;
  }
}
