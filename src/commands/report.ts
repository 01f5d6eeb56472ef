// What a command hands back to the CLI for rendering (text or JSON); sizes in bytes.

export interface ResizeInfoReport {
  kind: 'resize-info';
  sizeBytes: number;
  minimumBytes: number;
  minimumKeepLastPartitionBytes: number;
  warnings: string[];
}

export interface CompactInfoReport {
  kind: 'compact-info';
  blockSizeBytes: number;
  totalBlocks: number;
  allocatedBlocks: number;
  usedBlocks: number;
  reclaimableBytes: number;
  /** Bytes held by snapshots or lower layers, which compact cannot free. */
  heldByLowerLayersBytes: number;
  warnings: string[];
}

/** What every modifying command reports, in bytes; with --dry-run "after" is what the plan gives. */
export interface ChangeFacts {
  sizeBeforeBytes: number;
  sizeAfterBytes: number;
  hostBytesBefore: number;
  hostBytesAfter: number;
  [fact: string]: unknown;
}

/** A modifying command's account of what it did, or with --dry-run would do. */
export interface ChangeReport {
  kind: 'change';
  operation: 'resize' | 'compact' | 'merge' | 'convert';
  dryRun: boolean;
  /** True when the image was already in the requested state. */
  unchanged: boolean;
  /** The plan: a summary sentence, then one sentence per step. */
  plan: string[];
  /** Closing sentences for the user (what changed, advice). */
  messages: string[];
  /** The common facts plus command-specific ones, for --json. */
  facts: ChangeFacts;
  warnings: string[];
}

export type Report = ResizeInfoReport | CompactInfoReport | ChangeReport;
