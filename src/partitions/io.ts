// Reading and writing a few sectors of a guest disk through qemu-io, with the format always named.
//
// Why qemu-io: it reads qcow2 (and its backing chain) and Parallels deltas as the guest sees them, without an
// appliance (20 s under TCG) and without a temporary copy; `read -v` prints a hex dump we parse, `write -s`
// takes the bytes from a file. Reads run with -r -U (shared, read-only: they work on a read-only file and beside
// a running VM); writes take QEMU's write lock, so they fail while a VM has the image open.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { onExit } from '../util/cancel.js';
import { ToolError } from '../util/errors.js';
import type { QemuFormat } from '../formats/qcow2/qemu-img.js';
import type { SectorWrite } from './gpt.js';

export interface ByteSource {
  /** Bytes [offset, offset + length) of the guest disk; beyond its end reads as zeros. */
  read(offsetBytes: number, length: number): Promise<Buffer>;
  sizeBytes: number;
}

export interface DiskFile {
  path: string;
  format: QemuFormat;
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

export function imageSource(disk: DiskFile, sizeBytes: number): ByteSource {
  return {
    sizeBytes,
    async read(offsetBytes, length) {
      const clipped = Math.max(0, Math.min(length, sizeBytes - offsetBytes));
      const out = Buffer.alloc(length);
      if (clipped === 0) return out;
      const { stdout } = await run('qemu-io', ['-r', '-U', '-f', disk.format, '-c', `read -v ${offsetBytes} ${clipped}`, disk.path], {
        timeoutMs: 120_000,
      });
      parseHexDump(stdout, offsetBytes, clipped).copy(out);
      return out;
    },
  };
}

/** Writes the buffers in order, in one qemu-io run (one open, one flush at close). */
export async function writeSectors(disk: DiskFile, writes: readonly SectorWrite[]): Promise<void> {
  if (writes.length === 0) return;
  // qemu-io splits its command lines on blanks without quoting, so the sources live in a private folder whose
  // path has none (os.tmpdir()); they are a few KiB of table bytes, not image data.
  const folder = mkdtempSync(join(tmpdir(), 'prl-disk-tool-'));
  if (/\s/.test(folder)) throw new ToolError('tool-failed', `The temporary folder "${folder}" contains blanks, which qemu-io cannot take.`);
  const unregister = onExit(() => rmSync(folder, { recursive: true, force: true }));
  try {
    const args = ['-f', disk.format];
    writes.forEach((write, index) => {
      const source = join(folder, `w${index}`);
      writeFileSync(source, write.bytes);
      args.push('-c', `write -q -s ${source} ${write.offsetBytes} ${write.bytes.length}`);
    });
    args.push('-c', 'flush', disk.path);
    // A few sectors of table: stopping between two of them would leave the table half-written.
    const { stdout, stderr } = await run('qemu-io', args, { timeoutMs: 300_000, untorn: true });
    if (/failed|error/i.test(stdout + stderr)) throw new ToolError('tool-failed', `qemu-io could not write to "${disk.path}": ${(stdout + stderr).trim()}`);
  } finally {
    rmSync(folder, { recursive: true, force: true });
    unregister();
  }
}
