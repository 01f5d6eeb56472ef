// The host's ploop tool, which changes a running container's image online, in the kernel. Our engine never
// writes a delta the kernel holds; for a mounted image resize, compact and merge run ploop with the arguments the
// original prl_disk_tool 7.0.21 exec'd (CommandCt.cpp, Resize/Compact/MergeSnapshots::executePloop; docs/ploop.md).
import { constants, existsSync } from 'node:fs';
import { join } from 'node:path';
import { CommandFailed, quoteArgv, run } from '../../util/exec.js';
import { ToolError } from '../../util/errors.js';
import { accessible } from '../../util/host-files.js';
import { debug } from '../../util/log.js';
import { KiB, MiB } from '../../util/units.js';
import { sysfsRoot } from './holders.js';

export type OnlineChange = { kind: 'resize'; sizeBytes: number } | { kind: 'compact' } | { kind: 'merge' };

/** ploop's SYSEXIT_LOCK (include/libploop.h): another ploop operation holds DiskDescriptor.xml.lck. */
const SYSEXIT_LOCK = 23;

/** The original ran /usr/sbin/ploop; PRL_DISK_TOOL_PLOOP names a stand-in, for tests only. */
export function hostPloopPath(): string {
  return process.env.PRL_DISK_TOOL_PLOOP ?? '/usr/sbin/ploop';
}

/** ploop's -s takes a number with a K/M/G suffix (parse_size); SIZE is whole KiB at least, so nothing is rounded. */
function ploopSize(bytes: number): string {
  return bytes % MiB === 0 ? `${bytes / MiB}M` : `${bytes / KiB}K`;
}

/** The whole argv, tool first: the original's argument lists (CommandCt.cpp lines 265-307; docs/ploop.md). */
export function hostPloopArgv(change: OnlineChange, descriptorPath: string): string[] {
  const args =
    change.kind === 'resize'
      ? ['resize', '-s', ploopSize(change.sizeBytes), descriptorPath]
      : change.kind === 'compact'
        ? ['balloon', 'discard', '--automount', '--defrag', descriptorPath]
        : ['snapshot-merge', '-A', descriptorPath];
  return [hostPloopPath(), ...args];
}

/** What the host lacks to change a mounted image online, as phrases for one sentence; empty when nothing. */
export function missingForOnline(): string[] {
  const missing: string[] = [];
  const tool = hostPloopPath();
  if (!accessible(tool, constants.X_OK)) missing.push(`the host's ploop tool (${tool}) is not installed`);
  const module = join(sysfsRoot(), 'module', 'ploop');
  if (!existsSync(module)) missing.push(`the ploop kernel module is not loaded (${module} is absent)`);
  return missing;
}

/**
 * Runs the host's ploop to the end (a first SIGINT lets it finish: killing it mid-change is ploop's torn state, not
 * ours). Its stdout lines are its progress and go to `onLine`; its stderr is kept for the one-sentence error, and
 * shown under -v on success (a successful command prints nothing on stderr).
 */
export async function runHostPloop(argv: readonly string[], what: string, onLine: (line: string) => void): Promise<void> {
  try {
    const result = await run(argv[0]!, argv.slice(1), { onStdoutLine: onLine, untorn: true });
    if (result.stderr.trim() !== '') debug(`ploop said on stderr: ${result.stderr.trim()}`);
  } catch (error) {
    if (!(error instanceof CommandFailed)) throw error;
    const said = error.stderr.trim().split('\n').filter((line) => line.trim() !== '').pop();
    const status = error.exitCode !== null ? `exit status ${error.exitCode}` : (error.signal ?? 'no status');
    const detail = said ? `: ${said.trim().replace(/\.$/, '')}` : '';
    if (error.exitCode === SYSEXIT_LOCK) {
      throw new ToolError('locked', `The host's ploop could not ${what} because another ploop operation holds the image (${status}${detail}); try again when it has finished.`, { cause: error });
    }
    throw new ToolError('tool-failed', `The host's ploop failed to ${what} (${status}${detail}); run "${quoteArgv(argv)}" to see its whole output.`, { cause: error });
  }
}
