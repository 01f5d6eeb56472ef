// The tool's main caller, Virtuozzo's dispatcher (OpenVZ/prl-disp-service), runs it with the argv forms below and
// reads its output as re-implemented here from its sources:
// - Dispatcher/Dispatcher/Tasks/Task_ConvertDisks.cpp, convertDisks(): QProcess::start of
//   `"TOOL"  convert  --hdd  "PATH"  --plain|--expanding` or `"TOOL"  merge  --hdd  "PATH" `, stdout and stderr
//   on separate channels. onReadyReadStandardError(): any stderr byte sets PRL_ERR_CONV_HD_EXIT_WITH_ERROR.
//   onReadyReadStandardOutput() → sendCoversionProgressParams(): QRegExp("\\b\\d+\\b\\s*%").lastIndexIn(chunk),
//   the last match of each chunk read is the progress. onFinished(): a crash or a non-zero exit is a failure.
// - Dispatcher/Dispatcher/Tasks/Task_DiskImageResizer.cpp, run_disk_tool(): `resize --hdd PATH --info` or
//   `resize --hdd PATH --size NM`, then `--resize_partition` when the request has that flag, with
//   QProcess::MergedChannels. Info::operator(): readLine().trimmed() until the first empty line; a line containing
//   "Unsupported filesystem" or "The last partition cannot be resized " clears "resize supported"; a line split on
//   ':' into exactly two parts gives the number before the first 'M' to "Size…" (current size) or "Minimum…"
//   (qMax(100, value)), skipping "Minimum without resizing the last partition". A resize is a failure when the exit
//   code is not 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, verifyImage, type BuiltImage } from '../factory/index.js';
import { overwriteGuestBytes } from '../factory/mutate.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { ploopOk } from '../helpers/real-ploop.js';

const MiB = 2 ** 20;
const env = { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };

interface ConvertOutcome {
  failed: boolean;
  why: string;
  progress: number[];
}

/** Task_ConvertDisks: separate channels, any stderr byte or a non-zero exit fails, progress per stdout chunk. */
function runAsConvertDisks(args: string[]): Promise<ConvertOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath(), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const outcome: ConvertOutcome = { failed: false, why: '', progress: [] };
    child.stderr.on('data', (chunk: Buffer) => {
      outcome.failed = true;
      outcome.why += chunk.toString('utf8');
    });
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const matches = [...chunk.matchAll(/\b\d+\b\s*%/g)];
      const last = matches.at(-1);
      if (last) outcome.progress.push(parseInt(last[0].replace('%', ''), 10));
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (signal !== null || code !== 0) {
        outcome.failed = true;
        outcome.why += `exit ${code ?? signal}`;
      }
      resolve(outcome);
    });
  });
}

/** Task_DiskImageResizer: both channels into one, in write order (one file descriptor, as MergedChannels). */
function runAsDiskImageResizer(args: string[], dir: string): Promise<{ code: number | null; merged: string }> {
  const file = join(dir, `merged-${Date.now()}.txt`);
  const fd = openSync(file, 'w');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath(), ...args], { env, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, merged: readFileSync(file, 'utf8') }));
  });
}

interface DiskInfo {
  resizeSupported: boolean;
  currentSize: number;
  minSize: number;
}

/** Info::operator() of Task_DiskImageResizer.cpp, line for line. */
function parseInfo(merged: string): DiskInfo {
  const info: DiskInfo = { resizeSupported: true, currentSize: 0, minSize: 0 };
  for (const raw of merged.split('\n')) {
    const a = raw.trim();
    if (a === '') break;
    if (a.includes('Unsupported filesystem')) info.resizeSupported = false;
    else if (a.includes('The last partition cannot be resized ')) info.resizeSupported = false;
    const b = a.split(':');
    if (b.length !== 2) continue;
    let value = b[1]!.trim();
    const m = value.indexOf('M');
    value = m < 0 ? '' : value.slice(0, m); // QByteArray::truncate(-1) empties it
    const number = /^\d+$/.test(value) ? Number(value) : 0; // toULongLong: 0 when not a number
    if (b[0]!.startsWith('Size')) info.currentSize = number;
    else if (b[0]!.startsWith('Minimum without resizing the last partition')) {
      // ignored by the dispatcher
    } else if (b[0]!.startsWith('Minimum')) info.minSize = Math.max(100, number);
  }
  return info;
}

function jsonInfo(hdd: string): { size: number; minimum: number } {
  return JSON.parse(execFileSync(process.execPath, [cliPath(), 'resize', '--hdd', hdd, '--info', '--json'], { env, encoding: 'utf8' })) as { size: number; minimum: number };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'prl-dispatcher-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Task_ConvertDisks: convert and merge of a VM disk', () => {
  it('merge, convert --plain and convert --expanding succeed, with progress read from stdout', async () => {
    const image = join(dir, 'convert.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '512M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 96M', image], { stdio: 'ignore' });
    execFileSync('qemu-img', ['snapshot', '-c', 'before', image]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 0 32M', image], { stdio: 'ignore' });

    for (const args of [['merge', '--hdd', image], ['convert', '--hdd', image, '--plain'], ['convert', '--hdd', image, '--expanding']]) {
      const outcome = await runAsConvertDisks(args);
      expect(outcome.failed, `${args.join(' ')}: ${outcome.why}`).toBe(false);
      expect(outcome.progress.length, args.join(' ')).toBeGreaterThan(0);
      expect(outcome.progress.at(-1), args.join(' ')).toBe(100);
    }
    expect(execFileSync('qemu-img', ['snapshot', '-l', image], { encoding: 'utf8' })).toBe('');
    execFileSync('qemu-img', ['check', '-q', '-f', 'qcow2', image]);
  });
});

describe('Task_DiskImageResizer: resize --info and resize --size', () => {
  let ext4: BuiltImage;
  beforeAll(async () => {
    ext4 = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, name: 'ext4', sizeMiB: 512, filesMiB: 32, deletedMiB: 16 });
  });

  it('ext4: resize supported, the right size, and a minimum that resize --size NM --resize_partition accepts', async () => {
    const info = await runAsDiskImageResizer(['resize', '--hdd', ext4.hdd, '--info'], dir);
    expect(info.code, info.merged).toBe(0);
    const parsed = parseInfo(info.merged);
    expect(parsed, info.merged).toMatchObject({ resizeSupported: true, currentSize: 512 });
    expect(parsed.minSize).toBeGreaterThanOrEqual(100);
    expect(parsed.minSize).toBeLessThan(512);

    // prlctl set --device-set --size grows without --resize_partition only when asked; then the shrink to the
    // dispatcher's minimum, with --resize_partition as prlctl adds it by default (PrlDev.cpp).
    const grow = await runAsDiskImageResizer(['resize', '--hdd', ext4.hdd, '--size', '576M'], dir);
    expect(grow.code, grow.merged).toBe(0);
    const shrink = await runAsDiskImageResizer(['resize', '--hdd', ext4.hdd, '--size', `${parsed.minSize}M`, '--resize_partition'], dir);
    expect(shrink.code, shrink.merged).toBe(0);
    const report = await verifyImage(ext4);
    expect(report.image.virtualSizeBytes).toBe(parsed.minSize * MiB);
  });

  it('vfat (a filesystem the tool cannot resize): resize not supported, size and minimum as the tool computes them', async () => {
    const raw = join(dir, 'vfat.raw');
    execFileSync('truncate', ['-s', '256M', raw]);
    execFileSync('sfdisk', ['-q', raw], { input: 'label: gpt\nstart=2048, size=409600, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' });
    execFileSync('mkfs.fat', ['--offset', '2048', raw, String(409600 / 2)], { stdio: 'ignore' });
    const image = join(dir, 'vfat.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, image]);
    expect(execFileSync('blkid', ['-p', '-O', String(2048 * 512), '-o', 'value', '-s', 'TYPE', raw], { encoding: 'utf8' }).trim()).toBe('vfat');

    const json = jsonInfo(image);
    // Both of the dispatcher's forms: --info alone, and --info with --resize_partition appended.
    for (const extra of [[], ['--resize_partition']]) {
      const info = await runAsDiskImageResizer(['resize', '--hdd', image, '--info', ...extra], dir);
      expect(info.code, info.merged).toBe(0);
      expect(parseInfo(info.merged), info.merged).toEqual({ resizeSupported: false, currentSize: 256, minSize: Math.max(100, Math.ceil(json.minimum / MiB)) });
    }
  });

  it('a damaged ext4 (errors recorded in its superblock): resize not supported', async () => {
    const damaged = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, name: 'damaged', sizeMiB: 256, filesMiB: 8, deletedMiB: 0 });
    // Partition 2 starts at sector 18432 (test/factory/index.ts); s_state (le16 at superblock + 0x3a) gets
    // EXT2_ERROR_FS (2) beside EXT2_VALID_FS (1).
    await overwriteGuestBytes(damaged, 18432 * 512 + 1024 + 0x3a, 1, 0x03);
    const json = jsonInfo(damaged.hdd);
    const info = await runAsDiskImageResizer(['resize', '--hdd', damaged.hdd, '--info'], dir);
    expect(info.code, info.merged).toBe(0);
    expect(parseInfo(info.merged), info.merged).toEqual({ resizeSupported: false, currentSize: 256, minSize: Math.ceil(json.minimum / MiB) });
  });
});

describe('Task_DiskImageResizer: resize --info of an image with snapshots (issue 25)', () => {
  const qcow2Snapshot = async (image: BuiltImage): Promise<void> => void execFileSync('qemu-img', ['snapshot', '-c', 'before', image.hdd]);
  const ploopSnapshot = async (image: BuiltImage): Promise<void> => void (await ploopOk(['snapshot', join(image.hdd, 'DiskDescriptor.xml')]));
  // After a ploop snapshot the top delta is empty: the numbers come only from reading through the chain, natively
  // (ext4's minimum) and in the appliance (btrfs is measured there).
  const cases: { name: string; format: 'qcow2' | 'ploop'; content: 'ext4' | 'btrfs'; snapshot: (image: BuiltImage) => Promise<void> }[] = [
    { name: 'qcow2 ext4 with an internal snapshot', format: 'qcow2', content: 'ext4', snapshot: qcow2Snapshot },
    { name: 'ploop ext4 with a snapshot delta made by real ploop', format: 'ploop', content: 'ext4', snapshot: ploopSnapshot },
    { name: 'ploop btrfs with a snapshot delta made by real ploop', format: 'ploop', content: 'btrfs', snapshot: ploopSnapshot },
  ];

  it.each(cases)('$name: exit 0, resize supported, the current state\'s Size and Minimum, a notice to merge before a shrink', async ({ format, content, snapshot }) => {
    const image = await buildImage({ format, table: 'gpt', content, dir, name: `snap-${format}-${content}`, sizeMiB: 384, filesMiB: 16, deletedMiB: 8 });
    const before = jsonInfo(image.hdd);
    await snapshot(image);
    // As the dispatcher runs it, but with the channels apart: a success writes nothing on stderr.
    const info = await runCli(['resize', '--hdd', image.hdd, '--info'], { LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' });
    expect(info.code, info.stderr).toBe(0);
    expect(info.stderr).toBe('');
    // With nothing on stderr the merged channel is stdout itself.
    expect(parseInfo(info.stdout), info.stdout).toEqual({ resizeSupported: true, currentSize: 384, minSize: Math.max(100, Math.ceil(before.minimum / MiB)) });
    expect(info.stdout.split('\n\n')[0]).toMatch(/snapshot.*current state.*shrink needs the snapshots merged first/);
  });
});
