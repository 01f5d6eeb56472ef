// What every command receives from the CLI: how to report progress and notices.
import type { Progress } from '../util/progress.js';

export interface Context {
  progress: Progress;
  /** A sentence for the user that is not an error (warnings, advice); shown on stderr or in the JSON. */
  notice(message: string): void;
}
