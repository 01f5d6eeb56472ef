// A running container's resize, compact and merge: the kernel owns its image, so the host's ploop does the change
// online, with the original prl_disk_tool's arguments (docs/ploop.md). The plan names the exact command; a dry run
// prints it and stops. Without a host ploop or its kernel module: the in-use refusal, naming what is missing.
import type { Context } from './context.js';
import type { ChangeReport } from './report.js';
import { KernelMounted, openImage, type OpenedImage, type OpenOptions } from './open.js';
import { hostPloopArgv, missingForOnline, runHostPloop, type OnlineChange } from '../formats/ploop/host-ploop.js';
import { deviceSizeBytes } from '../formats/ploop/mounted.js';
import { quoteArgv } from '../util/exec.js';
import { ToolError } from '../util/errors.js';
import { hostAllocatedBytes } from '../util/space.js';
import { formatBytes } from '../util/units.js';

const DOING: Record<OnlineChange['kind'], string> = { resize: 'resize', compact: 'compact', merge: 'merge the snapshots of' };

/** Opens the image for a change; for a running container, the change is done by the host's ploop and its report returned. */
export async function openOrDelegate(hdd: string, change: OnlineChange, options: OpenOptions, context: Context): Promise<{ opened: OpenedImage } | { report: ChangeReport }> {
  try {
    return { opened: await openImage(hdd, 'modify', context.notice, { ...options, online: true }) };
  } catch (error) {
    if (!(error instanceof KernelMounted)) throw error;
    return { report: await delegate(error, hdd, change, options.dryRun === true, context) };
  }
}

/** Host bytes of the deltas that still exist (a merge removes the merged ones). */
function deltaBytes(deltas: readonly string[]): number {
  let total = 0;
  for (const delta of deltas) {
    try {
      total += hostAllocatedBytes(delta);
    } catch {
      // Merged away by ploop.
    }
  }
  return total;
}

async function delegate(mounted: KernelMounted, hdd: string, change: OnlineChange, dryRun: boolean, context: Context): Promise<ChangeReport> {
  const devices = mounted.devices.join(', ');
  const missing = missingForOnline();
  if (missing.length > 0) {
    throw new ToolError(
      'in-use',
      `The ploop image "${hdd}" is mounted by the kernel as ${devices} (a running container); stop the container first, then try again: changing it online needs the host's ploop, and ${missing.join(', and ')}. Nothing was changed.`,
    );
  }
  const argv = hostPloopArgv(change, mounted.descriptorPath);
  const what = `${DOING[change.kind]} the running container "${hdd}"`;
  const plan = [
    `The container is running (the kernel has "${hdd}" mounted as ${devices}): the host's ploop will ${DOING[change.kind]} it online, as the original prl_disk_tool did.`,
    `  1. Run ${quoteArgv(argv)}`,
  ];
  const sizeBeforeBytes = deviceSizeBytes(mounted.devices[0]!);
  const hostBytesBefore = deltaBytes(mounted.deltas);
  const sizeAfterBytes = change.kind === 'resize' ? change.sizeBytes : sizeBeforeBytes;
  const facts = { sizeBeforeBytes, sizeAfterBytes, hostBytesBefore, online: true, command: argv };
  if (dryRun) {
    return { kind: 'change', operation: change.kind, dryRun, unchanged: false, plan, messages: [plan[0]!], facts: { ...facts, hostBytesAfter: hostBytesBefore }, warnings: [] };
  }
  context.progress.step(`Running ${quoteArgv(argv)}`);
  await runHostPloop(argv, what, (line) => {
    context.notice(line);
    const percent = /(\d+(?:\.\d+)?)\s*%/.exec(line);
    if (percent) context.progress.update(Number(percent[1]) / 100);
  });
  context.progress.done();
  const hostBytesAfter = deltaBytes(mounted.deltas);
  return {
    kind: 'change', operation: change.kind, dryRun, unchanged: false, plan,
    messages: [`"${hdd}" was changed online by the host's ploop (${formatBytes(hostBytesBefore)} of host space before, ${formatBytes(hostBytesAfter)} after).`],
    facts: { ...facts, hostBytesAfter, sizeAfterBytes: change.kind === 'resize' ? change.sizeBytes : deviceSizeBytes(mounted.devices[0]!) },
    warnings: [],
  };
}
