// Process-wide cancellation (SIGINT/SIGTERM) and the cleanups that must run on every exit path.
import { Interrupted } from './errors.js';

const controller = new AbortController();
const cleanups = new Set<() => Promise<void> | void>();

/** Aborted when the user interrupts the tool; long-running work checks it between steps. */
export const cancellation: AbortSignal = controller.signal;

export function cancel(signalName: string): void {
  if (!controller.signal.aborted) controller.abort(new Interrupted(signalName));
}

let shieldDepth = 0;

/** True while a rollback runs: it must finish even though the user interrupted the command. */
export function isCancelled(): boolean {
  return controller.signal.aborted && shieldDepth === 0;
}

export function throwIfCancelled(): void {
  if (isCancelled()) throw controller.signal.reason;
}

/**
 * Runs `work` (a rollback that restores the image) even after an interruption: subprocesses start and are not
 * killed, and cancellation checks pass. A second signal still ends the tool at once (cli/main.ts).
 */
export async function shielded<T>(work: () => Promise<T>): Promise<T> {
  shieldDepth++;
  try {
    return await work();
  } finally {
    shieldDepth--;
  }
}

/** Registers an action for every exit path; returns a function that unregisters it once done normally. */
export function onExit(action: () => Promise<void> | void): () => void {
  cleanups.add(action);
  return () => {
    cleanups.delete(action);
  };
}

/** Runs the registered actions, newest first, each at most once; failures are reported, not thrown. */
export async function runExitActions(report: (message: string) => void): Promise<void> {
  const actions = [...cleanups].reverse();
  cleanups.clear();
  for (const action of actions) {
    try {
      await action();
    } catch (error) {
      report(`cleanup failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}
