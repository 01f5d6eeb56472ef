// qemu-io as a typed API: guest bytes read and written at offsets, ranged discards, a read-write open probe;
// the format always named. Reads run with -r -U (shared, read-only: they work on a read-only file and beside a
// running VM); writes and probes take QEMU's write lock, so they fail while a VM has the image open.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../util/exec.js';
import { onExit, throwIfCancelled } from '../../util/cancel.js';
import { ToolError } from '../../util/errors.js';
import type { QemuFormat } from './qemu-img.js';

/** qemu-io commands per run: a long argv is fine, but each run stays well below ARG_MAX. */
const COMMANDS_PER_RUN = 2000;

export interface GuestWrite {
  offsetBytes: number;
  bytes: Buffer;
  /** Flush what was written before this write starts. */
  barrier?: boolean;
}

/** Parses `read -v` hex-dump lines ("00000200:  eb 63 90 …  ascii") into a buffer covering [offset, offset+length). */
export function parseHexDump(text: string, offsetBytes: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let seen = 0;
  for (const line of text.split('\n')) {
    const match = /^([0-9a-f]{8,}):((?: [0-9a-f]{2}){1,16})/.exec(line.replace(/: {2}/, ': '));
    if (!match) continue;
    const at = parseInt(match[1]!, 16) - offsetBytes;
    const bytes = match[2]!.trim().split(' ').map((h) => parseInt(h, 16));
    if (at < 0 || at + bytes.length > length) continue;
    Buffer.from(bytes).copy(out, at);
    seen += bytes.length;
  }
  if (seen !== length) throw new ToolError('tool-failed', `qemu-io returned ${seen} of ${length} bytes at offset ${offsetBytes}.`);
  return out;
}

/** Guest bytes [offset, offset + length) as the whole chain shows them. */
export async function readGuestBytes(path: string, format: QemuFormat, offsetBytes: number, length: number): Promise<Buffer> {
  const { stdout } = await run('qemu-io', ['-r', '-U', '-f', format, '-c', `read -v ${offsetBytes} ${length}`, path], { timeoutMs: 120_000 });
  return parseHexDump(stdout, offsetBytes, length);
}

/** Writes the buffers in order, in one qemu-io run (one open, one flush at close). */
export async function writeGuestBytes(path: string, format: QemuFormat, writes: readonly GuestWrite[]): Promise<void> {
  if (writes.length === 0) return;
  // qemu-io splits its command lines on blanks without quoting, so the sources live in a private folder whose
  // path has none (os.tmpdir()); they are a few KiB of table bytes, not image data.
  const folder = mkdtempSync(join(tmpdir(), 'prl-disk-tool-'));
  if (/\s/.test(folder)) throw new ToolError('tool-failed', `The temporary folder "${folder}" contains blanks, which qemu-io cannot take.`);
  const unregister = onExit(() => rmSync(folder, { recursive: true, force: true }));
  try {
    const args = ['-f', format];
    writes.forEach((write, index) => {
      const source = join(folder, `w${index}`);
      writeFileSync(source, write.bytes);
      if (write.barrier) args.push('-c', 'flush');
      args.push('-c', `write -q -s ${source} ${write.offsetBytes} ${write.bytes.length}`);
    });
    args.push('-c', 'flush', path);
    // A few sectors of table: stopping between two of them would leave the table half-written.
    const { stdout, stderr } = await run('qemu-io', args, { timeoutMs: 300_000, untorn: true });
    if (/failed|error/i.test(stdout + stderr)) throw new ToolError('tool-failed', `qemu-io could not write to "${path}": ${(stdout + stderr).trim()}`);
  } finally {
    rmSync(folder, { recursive: true, force: true });
    unregister();
  }
}

/**
 * Discards byte ranges of the guest disk with unmap allowed: qcow2 drops the clusters (or marks them zero over a
 * backing file) and punches the freed host clusters out of the file.
 */
export async function discardGuestRanges(path: string, format: QemuFormat, ranges: readonly { start: number; length: number }[]): Promise<void> {
  await runQemuIoBatches(path, format, ranges.map((r) => `discard -q ${r.start} ${r.length}`), { unmap: true, what: 'discard ranges of' });
}

/**
 * Runs qemu-io commands on `path`, `commandsPerRun` per run (one open, then a flush and a close), so that each argv
 * stays well below ARG_MAX; cancellation is honoured between runs. `unmap` lets freed clusters leave the host file.
 * qemu-io reports a failed command on its output and still exits 0, so the output is read for one.
 */
export async function runQemuIoBatches(
  path: string,
  format: QemuFormat,
  commands: readonly string[],
  options: { unmap?: boolean; what: string; commandsPerRun?: number },
): Promise<void> {
  const perRun = options.commandsPerRun ?? COMMANDS_PER_RUN;
  for (let i = 0; i < commands.length; i += perRun) {
    throwIfCancelled();
    // qemu-io takes QEMU's write lock, so a VM that started meanwhile makes this fail instead of racing.
    const args = ['-f', format, ...(options.unmap ? ['-d', 'unmap'] : []), ...commands.slice(i, i + perRun).flatMap((command) => ['-c', command]), '-c', 'flush', path];
    // Untorn: qemu-io keeps its refcount updates in memory until the flush, so one killed amid a write that frees
    // or allocates clusters leaves them leaked (seen: a SIGTERM amid merge --external's zero writes leaked 128 of
    // the top's clusters). A run is bounded, so waiting for it after an interruption is short.
    const { stdout, stderr } = await run('qemu-io', args, { timeoutMs: 30 * 60_000, untorn: true });
    if (/failed|error/i.test(stdout + stderr)) throw new ToolError('tool-failed', `qemu-io could not ${options.what} "${path}": ${(stdout + stderr).trim()}`);
  }
}

/**
 * Opens a clean qcow2 file read-write and quits, writing nothing: fails when a VM holds it (even as a backing
 * file, which a VM only reads but keeps writers away from). Callers skip dirty images, whose open would repair.
 */
export async function probeReadWriteOpen(path: string): Promise<void> {
  await run('qemu-io', ['-f', 'qcow2', '-c', 'quit', path], { timeoutMs: 120_000 });
}
