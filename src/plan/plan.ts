// A plan is pure data: the steps a command will take, each with a sentence; the executor walks them in order.
import { throwIfCancelled } from '../util/cancel.js';
import { debug } from '../util/log.js';

export interface Step {
  readonly kind: string;
}

export interface Plan<S extends Step> {
  /** What the command will do, in one sentence (shown first by --dry-run). */
  readonly summary: string;
  readonly steps: readonly S[];
}

/** The plan as text lines: the summary, then one numbered sentence per step. */
export function describePlan<S extends Step>(plan: Plan<S>, describe: (step: S) => string): string[] {
  return [plan.summary, ...plan.steps.map((step, index) => `  ${index + 1}. ${describe(step)}`)];
}

/** Runs every step in order, logging each under -v; cancellation is honoured between steps. */
export async function executePlan<S extends Step>(
  plan: Plan<S>,
  describe: (step: S) => string,
  runStep: (step: S) => Promise<void>,
): Promise<void> {
  for (const [index, step] of plan.steps.entries()) {
    throwIfCancelled();
    debug(`step ${index + 1}/${plan.steps.length}: ${describe(step)}`);
    await runStep(step);
  }
}
