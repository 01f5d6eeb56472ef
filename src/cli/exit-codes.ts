// The one mapping from error kinds to exit codes (documented in the README and the man page).
import type { ErrorKind } from '../util/errors.js';

export const EXIT_OK = 0;
export const EXIT_INTERNAL = 1;

export const EXIT_CODES: Record<ErrorKind, number> = {
  usage: 2,
  'invalid-path': 3,
  'image-invalid': 4,
  locked: 5,
  'in-use': 6,
  'not-supported': 7,
  refused: 8,
  'no-space': 9,
  'tool-failed': 10,
  interrupted: 130,
};
