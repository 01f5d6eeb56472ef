// Process-wide cancellation (SIGINT/SIGTERM) and the cleanups that must run on every exit path.
import { Interrupted } from './errors.js';

const controller = new AbortController();
const cleanups = new Set<() => Promise<void> | void>();

/** Aborted when the user interrupts the tool; long-running work checks it between steps. */
export const cancellation: AbortSignal = controller.signal;

export function cancel(signalName: string): void {
  if (!controller.signal.aborted) controller.abort(new Interrupted(signalName));
}

export function throwIfCancelled(): void {
  if (controller.signal.aborted) throw controller.signal.reason;
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
