// convert --plain | --expanding: qcow2 through a copy beside the image and an atomic rename; ploop in place.
import type { ConvertRequest } from '../request.js';
import type { Context } from '../context.js';
import type { ChangeReport } from '../report.js';
import { openImage } from '../open.js';
import { describePlan, executePlan } from '../../plan/plan.js';
import { tempPathBeside } from '../../util/atomic.js';
import { formatBytes } from '../../util/units.js';
import { requireConsistentQcow2 } from '../../formats/qcow2/consistency.js';
import { describeConvertStep, gatherQcow2ConvertFacts, planQcow2Convert, runConvertStep } from './qcow2.js';
import { convertPloop } from './ploop.js';
import { hostAllocatedBytes } from '../../util/space.js';

export async function runConvert(request: ConvertRequest, context: Context): Promise<ChangeReport> {
  const opened = await openImage(request.hdd, 'modify', context.notice, { dryRun: request.dryRun });
  const cleanups = new Map<string, () => void>();
  try {
    if (opened.ref.format === 'ploop') return await convertPloop(opened, request, context);
    const path = opened.ref.path;
    const facts = await gatherQcow2ConvertFacts(path, opened.layers[0]!.identity);
    const temp = tempPathBeside(path, 'convert');
    const plan = planQcow2Convert(facts, request.target, temp);
    const warnings = plan.steps.length > 0 ? (await requireConsistentQcow2(path)).warnings : [];
    const lines = describePlan(plan, describeConvertStep);
    const common = { path, target: request.target, sizeBeforeBytes: facts.virtualSizeBytes, sizeAfterBytes: facts.virtualSizeBytes, hostBytesBefore: facts.hostBytes };
    if (plan.steps.length === 0 || request.dryRun) {
      return {
        kind: 'change', operation: 'convert', dryRun: request.dryRun, unchanged: plan.steps.length === 0, plan: lines,
        messages: plan.steps.length === 0 ? [plan.summary] : [], facts: { ...common, hostBytesAfter: facts.hostBytes }, warnings,
      };
    }
    await executePlan(plan, describeConvertStep, (step) => runConvertStep(step, context, cleanups, opened.adopt));
    const hostBytesAfter = hostAllocatedBytes(path);
    return {
      kind: 'change', operation: 'convert', dryRun: false, unchanged: false, plan: lines,
      messages: [`Converted ${path} to ${request.target === 'plain' ? 'a plain (fully allocated)' : 'an expanding (sparse)'} image; it now occupies ${formatBytes(hostBytesAfter)} on the host (was ${formatBytes(facts.hostBytes)}).`],
      facts: { ...common, hostBytesAfter },
      warnings,
    };
  } finally {
    // Normal failures remove the copy here; signals and crashes of the CLI go through onExit.
    for (const cleanup of cleanups.values()) cleanup();
    opened.lock.release();
  }
}
