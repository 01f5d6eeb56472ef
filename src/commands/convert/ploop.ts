// convert on ploop: in place through the ploop engine (allocate every cluster, or drop all-zero clusters and compact),
// with Storage/Preallocated in DiskDescriptor.xml following.
import type { Context } from '../context.js';
import type { ChangeReport } from '../report.js';
import type { OpenedImage } from '../open.js';
import type { ConvertRequest } from '../request.js';
import { recoverPloopImage, type PloopImage } from '../../formats/ploop/image.js';
import { hostBytesOf } from '../../formats/ploop/delta.js';
import { describeConvertPlan, executeConvert, planConvert, type ConvertPlan } from '../../formats/ploop/convert.js';
import { fillHoles, hasHoles } from '../../formats/ploop/host-extents.js';
import { Refused } from '../../util/errors.js';
import { formatBytes } from '../../util/units.js';
import { requireFreeSpace } from '../../util/space.js';

function chainHostBytes(image: PloopImage): number {
  return image.deltas.reduce((sum, delta) => sum + hostBytesOf(delta), 0);
}

/** Nothing to do: no cluster to allocate or release, and the descriptor already says so. */
export function ploopConvertIsNoop(plan: ConvertPlan, preallocatedNow: boolean): boolean {
  if (plan.target === 'preallocated') return plan.allocate.length === 0 && preallocatedNow;
  return (plan.compact?.releasedClusters ?? 0) === 0 && (plan.compact?.reclaimedBytes ?? 0) === 0 && !preallocatedNow;
}

export async function convertPloop(opened: OpenedImage, request: ConvertRequest, context: Context): Promise<ChangeReport> {
  if (opened.image.format !== 'ploop') throw new Error('internal: convertPloop on a qcow2 image');
  const folder = opened.image.folder;
  const target = request.target === 'plain' ? 'preallocated' : 'expanding';
  const image = opened.image.handle;
  if (image.deltas.length > 1) {
    throw new Refused(`The ploop image "${folder}" has ${image.deltas.length - 1} snapshot delta(s); fold them first with "prl_disk_tool merge --hdd ${folder}". Nothing was changed.`);
  }
  const recovery = image.pendingRecovery;
  if (target === 'expanding') context.progress.step('Looking for all-zero clusters');
  const plan = planConvert(image, target, (done, total) => context.progress.update(done / total));
  if (target === 'expanding') context.progress.done();
  const hostBytesBefore = chainHostBytes(image);
  const holes = target === 'preallocated' && hasHoles(image.deltas[0]!);
  const noop = recovery.length === 0 && !holes && ploopConvertIsNoop(plan, image.descriptor.preallocated);
  const kind = request.target === 'plain' ? 'plain (preallocated)' : 'expanding';
  const lines = noop
    ? [`${folder} is already ${kind}; nothing to convert.`]
    : [
        `Convert the ploop image ${folder} to ${kind}, in place.`,
        ...recovery.map((finding) => `  Complete an interrupted operation first: ${finding}.`),
        ...describeConvertPlan(plan).map((line, i) => `  ${i + 1}. ${line}`),
        ...(holes ? [`  ${describeConvertPlan(plan).length + 1}. Allocate the holes a sparse copy left inside the delta's clusters (fallocate); no content changes.`] : []),
      ];
  const facts = { path: folder, target: request.target, sizeBeforeBytes: image.sizeBytes, sizeAfterBytes: image.sizeBytes, hostBytesBefore };
  if (plan.target === 'preallocated' && plan.allocateBytes > 0) requireFreeSpace(image.deltas[0]!.path, plan.allocateBytes, 'preallocating the image');
  if (noop || request.dryRun) {
    return {
      kind: 'change', operation: 'convert', dryRun: request.dryRun, unchanged: noop, plan: lines,
      messages: noop ? lines : [], facts: { ...facts, hostBytesAfter: hostBytesBefore }, warnings: [],
    };
  }
  if (recovery.length > 0) {
    // Recovery may truncate or rewrite the BAT (the handle follows what it writes): plan again on it.
    recoverPloopImage(image);
  }
  const fresh = recovery.length > 0 ? planConvert(image, target) : plan;
  context.progress.step(request.target === 'plain' ? 'Allocating every cluster' : 'Releasing all-zero clusters');
  executeConvert(image, fresh, { progress: (done, total) => context.progress.update(total > 0 ? done / total : 1) });
  if (target === 'preallocated' && hasHoles(image.deltas[0]!)) await fillHoles(image.deltas[0]!);
  context.progress.done();
  const hostBytesAfter = chainHostBytes(image);
  return {
    kind: 'change', operation: 'convert', dryRun: false, unchanged: false, plan: lines,
    messages: [`Converted ${folder} to ${kind}; it now occupies ${formatBytes(hostBytesAfter)} on the host (was ${formatBytes(hostBytesBefore)}).`],
    facts: { ...facts, hostBytesAfter },
    warnings: [],
  };
}
