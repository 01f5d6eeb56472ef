// A parsed command line: which operation, on which image, with which options.
import type { Unit } from '../util/units.js';

export type Operation = 'resize' | 'compact' | 'merge' | 'convert';

export interface Common {
  hdd: string;
  verbose: boolean;
  json: boolean;
}

export type Request =
  | { kind: 'help' }
  | { kind: 'usage' }
  | (Common & { kind: 'resize-info'; units: Unit })
  | (Common & { kind: 'resize'; sizeBytes: number; resizePartition: boolean; force: boolean; dryRun: boolean })
  | (Common & { kind: 'compact-info' })
  | (Common & { kind: 'compact'; dryRun: boolean })
  | (Common & { kind: 'merge'; external: boolean; dryRun: boolean })
  | (Common & { kind: 'convert'; target: 'plain' | 'expanding'; dryRun: boolean });

export type ResizeRequest = Extract<Request, { kind: 'resize' }>;
export type MergeRequest = Extract<Request, { kind: 'merge' }>;
export type ConvertRequest = Extract<Request, { kind: 'convert' }>;
