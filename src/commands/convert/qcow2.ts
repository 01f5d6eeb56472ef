// convert on qcow2: facts (options to keep, plain or not, space), a pure planner, and the copy-and-rename executor.
import type { Context } from '../context.js';
import { map, parseProgress, qemuImg, check } from '../../formats/qcow2/qemu-img.js';
import { readLayer } from '../../formats/qcow2/layers.js';
import { carryOver } from '../../util/host-files.js';
import type { Plan } from '../../plan/plan.js';
import { commitRename, createFresh, fsyncPath, removeIfExists, staleTemporaryFiles } from '../../util/atomic.js';
import { stillNames } from '../../util/safe-file.js';
import { onExit } from '../../util/cancel.js';
import { ImageInvalid, NotSupported, Refused, ToolError } from '../../util/errors.js';
import { formatBytes } from '../../util/units.js';
import { freeBytesAt, hostAllocatedBytes, requireSpace } from '../../util/space.js';
import { dirname } from 'node:path';

export type ConvertTarget = 'plain' | 'expanding';

export type ConvertStep =
  | { kind: 'remove-stale'; paths: string[] }
  | { kind: 'copy'; source: string; temp: string; target: ConvertTarget; createOptions: string; requiredBytes: number }
  | { kind: 'check-copy'; temp: string }
  | { kind: 'replace'; temp: string; path: string; identity: string };

export function describeConvertStep(step: ConvertStep): string {
  switch (step.kind) {
    case 'remove-stale':
      return `Remove ${step.paths.length} temporary file(s) an interrupted run left: ${step.paths.join(', ')}.`;
    case 'copy':
      return `Copy ${step.source} into the new ${step.target === 'plain' ? 'fully allocated' : 'sparse'} image ${step.temp} (qemu-img convert -o ${step.createOptions}; about ${formatBytes(step.requiredBytes)} on the host).`;
    case 'check-copy':
      return `Check the new image ${step.temp} with qemu-img check and flush it to disk.`;
    case 'replace':
      return `Rename ${step.temp} over ${step.path} (atomic), then make the rename durable.`;
  }
}

export interface Qcow2ConvertFacts {
  path: string;
  virtualSizeBytes: number;
  hostBytes: number;
  /** Every guest cluster has a host cluster and the file occupies at least the virtual size. */
  plain: boolean;
  hasBacking: boolean;
  snapshots: number;
  unsupported?: string;
  corrupt: boolean;
  /** qemu-img create options that keep the image's own settings (cluster size, compat, refcount width...). */
  keepOptions: string[];
  /** qemu-img measure's "required" for each target. */
  requiredBytes: Record<ConvertTarget, number>;
  freeBytes: number;
  staleTemporaries: string[];
  /** The image's identity when the session validated it: the name must still hold it at the rename. */
  identity: string;
}

/** Pure: the steps, nothing when already in the requested state, or a refusal naming what to do first. */
export function planQcow2Convert(facts: Qcow2ConvertFacts, target: ConvertTarget, temp: string): Plan<ConvertStep> {
  const kind = target === 'plain' ? 'plain (fully allocated)' : 'expanding (sparse)';
  if (facts.corrupt) throw new ImageInvalid(`The qcow2 image "${facts.path}" is marked corrupt; repair it with "qemu-img check -r all" first`);
  if (facts.unsupported) throw new NotSupported(`"${facts.path}" uses ${facts.unsupported}, which convert does not handle. Nothing was changed.`);
  if (facts.hasBacking) throw new Refused(`"${facts.path}" has a backing file; fold the chain first with "prl_disk_tool merge --external --hdd ${facts.path}". Nothing was changed.`);
  if (facts.snapshots > 0) throw new Refused(`"${facts.path}" has ${facts.snapshots} internal snapshot(s), which a copy would lose; delete them first with "prl_disk_tool merge --hdd ${facts.path}". Nothing was changed.`);
  if (facts.plain === (target === 'plain')) return { summary: `${facts.path} is already ${kind}; nothing to convert.`, steps: [] };
  const required = facts.requiredBytes[target];
  requireSpace(dirname(facts.path), facts.freeBytes, required, `the converted copy of "${facts.path}"`);
  const createOptions = [`preallocation=${target === 'plain' ? 'falloc' : 'off'}`, ...facts.keepOptions].join(',');
  const steps: ConvertStep[] = [];
  if (facts.staleTemporaries.length > 0) steps.push({ kind: 'remove-stale', paths: facts.staleTemporaries });
  steps.push(
    { kind: 'copy', source: facts.path, temp, target, createOptions, requiredBytes: required },
    { kind: 'check-copy', temp },
    { kind: 'replace', temp, path: facts.path, identity: facts.identity },
  );
  return { summary: `Convert ${facts.path} to ${target === 'plain' ? 'a' : 'an'} ${kind} image through a copy beside it and an atomic rename.`, steps };
}

function keepOptions(specific: Record<string, unknown>, clusterSize: number | undefined): string[] {
  const options: string[] = [];
  if (clusterSize !== undefined) options.push(`cluster_size=${clusterSize}`);
  if (specific.compat === '0.10' || specific.compat === '1.1') options.push(`compat=${specific.compat}`);
  if (typeof specific['refcount-bits'] === 'number') options.push(`refcount_bits=${specific['refcount-bits']}`);
  if (specific['lazy-refcounts'] === true) options.push('lazy_refcounts=on');
  if (specific['extended-l2'] === true) options.push('extended_l2=on');
  if (specific['compression-type'] === 'zstd') options.push('compression_type=zstd');
  return options;
}

async function measure(path: string, options: string): Promise<number> {
  const out = JSON.parse(await qemuImg(['measure', '--output=json', '-f', 'qcow2', '-O', 'qcow2', '-o', options, path], { timeoutMs: 30 * 60_000 })) as Record<string, unknown>;
  if (typeof out.required !== 'number') throw new ToolError('tool-failed', `qemu-img measure gave no required size for "${path}".`);
  return out.required;
}

export async function gatherQcow2ConvertFacts(path: string, identity: string): Promise<Qcow2ConvertFacts> {
  const layer = await readLayer(path, true);
  const raw = JSON.parse(await qemuImg(['info', '--output=json', '-f', 'qcow2', '-U', path], { timeoutMs: 120_000 })) as Record<string, unknown>;
  const specific = ((raw['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {}) as Record<string, unknown>;
  const keep = keepOptions(specific, typeof raw['cluster-size'] === 'number' ? raw['cluster-size'] : undefined);
  const hostBytes = hostAllocatedBytes(path);
  const facts: Qcow2ConvertFacts = {
    path,
    virtualSizeBytes: layer.virtualSizeBytes,
    hostBytes,
    plain: false,
    hasBacking: layer.backingFilename !== undefined,
    snapshots: layer.snapshots,
    corrupt: layer.corrupt,
    keepOptions: keep,
    requiredBytes: { plain: 0, expanding: 0 },
    freeBytes: freeBytesAt(path),
    // Anything else under such a name (a planted folder) is not ours: left alone; the copy has a fresh name.
    staleTemporaries: staleTemporaryFiles(path, 'convert'),
    identity,
  };
  if (layer.unsupported) facts.unsupported = layer.unsupported;
  if (facts.hasBacking || facts.unsupported || facts.snapshots > 0 || facts.corrupt) return facts;
  // Independent read-only queries: run them side by side (each walks the image's tables).
  const [extents, plain, expanding] = await Promise.all([
    map(path, 'qcow2'),
    measure(path, ['preallocation=falloc', ...keep].join(',')),
    measure(path, ['preallocation=off', ...keep].join(',')),
  ]);
  facts.plain = hostBytes >= layer.virtualSizeBytes && extents.every((extent) => extent.offset !== undefined);
  facts.requiredBytes = { plain, expanding };
  return facts;
}

/** Runs one step; the temporary copy is removed on every exit path until it has replaced the image. */
export async function runConvertStep(step: ConvertStep, context: Context, cleanups: Map<string, () => void>, adopt: (path: string) => void): Promise<void> {
  switch (step.kind) {
    case 'remove-stale':
      for (const path of step.paths) removeIfExists(path);
      return;
    case 'copy': {
      const unregister = onExit(() => removeIfExists(step.temp));
      cleanups.set(step.temp, () => {
        unregister();
        removeIfExists(step.temp);
      });
      createFresh(step.temp);
      context.progress.step(`Converting to ${step.target === 'plain' ? 'a plain' : 'an expanding'} image`);
      // The default cache mode (unsafe) is fine for a new file: check-copy fsyncs it before it is used.
      await qemuImg(['convert', '-p', '-f', 'qcow2', '-O', 'qcow2', '-o', step.createOptions, step.source, step.temp], {
        onStdoutLine: (line) => {
          const fraction = parseProgress(line);
          if (fraction !== undefined) context.progress.update(fraction);
        },
      });
      context.progress.done();
      return;
    }
    case 'check-copy': {
      fsyncPath(step.temp);
      const result = await check(step.temp, 'qcow2');
      if (result.corruptions > 0 || result.checkErrors > 0) {
        throw new ToolError('tool-failed', `The converted copy ${step.temp} fails qemu-img check; the image was left as it was.`);
      }
      return;
    }
    case 'replace':
      if (!stillNames(step.path, step.identity)) {
        throw new Refused(`"${step.path}" is no longer the file that was validated (it was replaced meanwhile), so the converted copy was not renamed over it and was removed; find out who changes the image's folder, then run the command again.`);
      }
      await carryOver(step.path, step.temp);
      // Our exclusive lock is on the old inode; the copy's inode is locked too before it takes the name.
      adopt(step.temp);
      commitRename(step.temp, step.path);
      cleanups.get(step.temp)?.(); // the name is gone now: this only unregisters
      cleanups.delete(step.temp);
      return;
  }
}
