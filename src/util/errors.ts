// Typed errors: every failure the tool reports is one of these, mapped to an exit code in cli/exit-codes.ts.

export type ErrorKind =
  | 'usage'
  | 'invalid-path'
  | 'image-invalid'
  | 'locked'
  | 'in-use'
  | 'not-supported'
  | 'refused'
  | 'no-space'
  | 'tool-failed'
  | 'interrupted';

export class ToolError extends Error {
  readonly kind: ErrorKind;
  /** Print the usage text after the message (the original did for argument errors). */
  readonly showUsage: boolean;

  constructor(kind: ErrorKind, message: string, options: { cause?: unknown; showUsage?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ToolError';
    this.kind = kind;
    this.showUsage = options.showUsage ?? false;
  }
}

export class UsageError extends ToolError {
  constructor(message: string) {
    super('usage', message, { showUsage: true });
    this.name = 'UsageError';
  }
}

/** An on-disk structure failed validation; `findings` holds one sentence per violated rule. */
export class ImageInvalid extends ToolError {
  readonly findings: readonly string[];
  constructor(message: string, findings: readonly string[] = []) {
    super('image-invalid', findings.length > 0 ? `${message}: ${findings.join('; ')}` : message);
    this.name = 'ImageInvalid';
    this.findings = findings;
  }
}

export class NotSupported extends ToolError {
  constructor(message: string) {
    super('not-supported', message);
    this.name = 'NotSupported';
  }
}

/** A request the tool understood but will not carry out, because it would lose data or cannot work. */
export class Refused extends ToolError {
  constructor(message: string) {
    super('refused', message);
    this.name = 'Refused';
  }
}

export class Interrupted extends ToolError {
  constructor(signal: string) {
    // Steps are atomic or rolled back, but an interrupted multi-step command may have finished some of them.
    super('interrupted', `Interrupted by ${signal}; the image is consistent (no step was left half-done). Run the same command again to complete the operation.`);
    this.name = 'Interrupted';
  }
}
