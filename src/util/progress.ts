// The progress interface commands report to; cli/progress.ts decides how it is shown.

export interface Progress {
  /** A new long step begins (its name is shown with the percentage). */
  step(label: string): void;
  /** Fraction 0..1 of the current step, from a real source (qemu-img -p, cluster loops, the appliance). */
  update(fraction: number): void;
  /** The current step is finished. */
  done(): void;
}
