// qemu-img as a typed API: JSON output only, the format always named, never probed.
import { run, CommandFailed, type RunOptions } from '../../util/exec.js';
import { ImageInvalid, ToolError } from '../../util/errors.js';

export type QemuFormat = 'qcow2' | 'parallels' | 'raw';

export interface Snapshot {
  id: string;
  name: string;
  vmStateSize: number;
}

export interface ImageInfo {
  filename: string;
  format: string;
  virtualSize: number;
  actualSize: number;
  clusterSize?: number;
  dirty: boolean;
  corrupt: boolean;
  backingFilename?: string;
  backingFormat?: string;
  fullBackingFilename?: string;
  snapshots: Snapshot[];
}

function asNumber(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new ToolError('tool-failed', `qemu-img info gave no valid ${what}.`);
  return value;
}

/** One image's qemu-img info JSON, typed; the one decoder of it. */
export function decodeInfo(raw: Record<string, unknown>): ImageInfo {
  const specific = (raw['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {};
  const snapshots = Array.isArray(raw.snapshots) ? (raw.snapshots as Record<string, unknown>[]) : [];
  const info: ImageInfo = {
    filename: String(raw.filename),
    format: String(raw.format),
    virtualSize: asNumber(raw['virtual-size'], 'virtual-size'),
    actualSize: typeof raw['actual-size'] === 'number' ? raw['actual-size'] : 0,
    dirty: raw['dirty-flag'] === true,
    corrupt: specific.corrupt === true,
    snapshots: snapshots.map((snapshot) => ({
      id: String(snapshot.id),
      name: String(snapshot.name ?? ''),
      vmStateSize: Number(snapshot['vm-state-size'] ?? 0),
    })),
  };
  if (typeof raw['cluster-size'] === 'number') info.clusterSize = raw['cluster-size'];
  if (typeof raw['backing-filename'] === 'string') info.backingFilename = raw['backing-filename'];
  if (typeof raw['backing-filename-format'] === 'string') info.backingFormat = raw['backing-filename-format'];
  if (typeof raw['full-backing-filename'] === 'string') info.fullBackingFilename = raw['full-backing-filename'];
  return info;
}

/** qemu's refusal when another process (a VM) holds the image's lock. */
const LOCK_FAILURE = /Failed to get ".*" lock|Is another process using the image/;

/** True when a qemu tool failed because another process holds QEMU's lock on the image. */
export function isLockFailure(error: unknown): boolean {
  return error instanceof CommandFailed && LOCK_FAILURE.test(error.stderr);
}

function explainOpenFailure(error: unknown, path: string, format: QemuFormat): never {
  if (error instanceof CommandFailed) {
    if (isLockFailure(error)) {
      throw new ToolError('in-use', `The disk image "${path}" is in use by a running virtual machine; stop the VM first.`);
    }
    if (/Image is not in qcow2 format|Unsupported qcow2 version|not in .* format|Image not in/i.test(error.stderr)) {
      throw new ImageInvalid(`"${path}" is not a ${format} image`);
    }
    throw new ImageInvalid(`"${path}" cannot be opened as a ${format} image (${error.stderr.trim().split('\n').pop() ?? 'qemu-img failed'})`);
  }
  throw error;
}

/**
 * Reads the image and its backing chain, top first. `shareLock` (-U) lets queries run beside a VM;
 * without it qemu-img takes QEMU's own image lock, which is how we detect a running VM.
 */
export async function infoChain(path: string, format: QemuFormat, shareLock: boolean): Promise<ImageInfo[]> {
  const args = ['info', '--output=json', '--backing-chain', '-f', format];
  if (shareLock) args.push('-U');
  args.push(path);
  let stdout: string;
  try {
    ({ stdout } = await run('qemu-img', args, { timeoutMs: 120_000 }));
  } catch (error) {
    explainOpenFailure(error, path, format);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw new ToolError('tool-failed', `qemu-img info printed output that is not JSON for "${path}".`);
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  return list.map((item) => decodeInfo(item as Record<string, unknown>));
}

export interface CheckResult {
  corruptions: number;
  /**
   * Of the corruptions, those that are only a wrong OFLAG_COPIED bit ("ERROR OFLAG_COPIED data cluster" or "L2
   * cluster": the bit says whether a cluster's refcount is exactly 1). qemu-img snapshot -d stopped by a crash or a
   * kill leaves these (B16 in docs/reliability.md); setting each bit from the refcount is always safe.
   */
  copiedFlagErrors: number;
  leaks: number;
  checkErrors: number;
  /** End of the last cluster qcow2's refcounts still use (qemu-img's image-end-offset); 0 when not reported. */
  imageEndOffset: number;
}

export async function check(path: string, format: QemuFormat, shareLock = false): Promise<CheckResult> {
  const args = ['check', '--output=json', '-f', format];
  if (shareLock) args.push('-U');
  args.push(path);
  // Exit 2: corruptions, 3: leaks only; both still print the JSON report.
  const { stdout, stderr } = await run('qemu-img', args, { okExitCodes: [0, 2, 3], timeoutMs: 30 * 60_000 });
  const report = JSON.parse(stdout) as Record<string, unknown>;
  return {
    corruptions: Number(report.corruptions ?? 0),
    copiedFlagErrors: countCopiedFlagErrors(stderr),
    leaks: Number(report.leaks ?? 0),
    checkErrors: Number(report['check-errors'] ?? 0),
    imageEndOffset: Number(report['image-end-offset'] ?? 0),
  };
}

/** The OFLAG_COPIED lines among qemu-img check's findings (it prints each problem on stderr, also with JSON output). */
export function countCopiedFlagErrors(stderr: string): number {
  return stderr.split('\n').filter((line) => /^ERROR OFLAG_COPIED (data|L2) cluster: /.test(line)).length;
}

/**
 * Sets every OFLAG_COPIED bit from its cluster's refcount and frees leaked clusters (qemu-img check -r all). The
 * caller runs it only when those are all the check found (CheckResult.copiedFlagErrors equal to corruptions):
 * then nothing else is rebuilt, and no guest byte changes.
 */
export async function repairCopiedFlags(path: string): Promise<void> {
  // Untorn: a repair stopped halfway would leave part of the flags for the next run to find again.
  await run('qemu-img', ['check', '-r', 'all', '-f', 'qcow2', path], { timeoutMs: 30 * 60_000, untorn: true });
}

/**
 * Frees clusters that an interrupted write left allocated but unused (qemu-img check's "leaks"). Leaks are
 * harmless and their repair only touches refcounts, never data; corruptions are not repaired here.
 */
export async function repairLeaks(path: string): Promise<number> {
  const found = await check(path, 'qcow2');
  if (found.leaks === 0 || found.corruptions > 0) return 0;
  await freeLeaks(path);
  return found.leaks;
}

/** The repair itself, for callers whose own qemu-img check already found leaks and no corruption. */
export async function freeLeaks(path: string): Promise<void> {
  // Untorn: a repair stopped halfway would leave part of the leaks for the next run to find again.
  await run('qemu-img', ['check', '-r', 'leaks', '-f', 'qcow2', path], { timeoutMs: 30 * 60_000, untorn: true });
}

/**
 * A qcow2 file as the backing of a throwaway overlay that only reads it, opened without QEMU's image lock
 * (`file.locking=off`, what -U is to qemu-img): a running VM holding the write lock does not stop the read.
 */
export function lockFreeQcow2(path: string): string {
  return `json:${JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: path, locking: 'off' } })}`;
}

/** qemu-img subcommand runner for the commands that change images (resize, convert, commit, snapshot). */
export async function qemuImg(args: readonly string[], options: RunOptions = {}): Promise<string> {
  return (await run('qemu-img', args, options)).stdout;
}

export interface MapExtent {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
  depth: number;
  offset?: number;
}

export async function map(path: string, format: QemuFormat, shareLock = true): Promise<MapExtent[]> {
  const args = ['map', '--output=json', '-f', format];
  if (shareLock) args.push('-U');
  args.push(path);
  const { stdout } = await run('qemu-img', args, { timeoutMs: 30 * 60_000 });
  return (JSON.parse(stdout) as Record<string, unknown>[]).map((extent) => {
    const result: MapExtent = {
      start: Number(extent.start),
      length: Number(extent.length),
      data: extent.data === true,
      zero: extent.zero === true,
      depth: Number(extent.depth ?? 0),
    };
    if (typeof extent.offset === 'number') result.offset = extent.offset;
    return result;
  });
}

/** Parses qemu-img's `-p` progress lines: "    (12.34/100%)". */
export function parseProgress(line: string): number | undefined {
  const match = /\((\d+(?:\.\d+)?)\/100%\)/.exec(line);
  return match ? Number(match[1]) / 100 : undefined;
}
