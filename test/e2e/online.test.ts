// A running container (its delta named by a ploop device in a fake sysfs) is changed by the host's ploop, with the
// original prl_disk_tool's arguments, and resize --info reads the mounted filesystem. This machine has no ploop
// module: a recording stand-in for ploop writes its argv to a file, prints progress and exits as told.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { descriptorXml, IN_USE_OPEN, readDeltaTable, ROOT_PARENT, TOP_GUID } from '../helpers/ploop.js';
import { qemuImg, sums } from '../helpers/images.js';

const { root, fresh } = caseFolders('prl-online-');
const MiB = 1024 * 1024;
const DEVICE = 'ploop27015';
/** The ploop device's size in the fake sysfs, and its first partition's (GPT: 1 MiB in). */
const DEVICE_SECTORS = 66 * 2048;
const PARTITION_SECTORS = 64 * 2048;

/** A stand-in for /usr/sbin/ploop: argv to STANDIN_LOG (one per line), progress on stdout, STANDIN_EXIT as its status. */
const standIn = join(root, 'ploop-stand-in');
writeFileSync(
  standIn,
  `#!/bin/sh
printf '%s\\n' "$0" "$@" > "$STANDIN_LOG"
echo "Resizing the image, 50%"
echo "done 100%"
if [ "\${STANDIN_EXIT:-0}" != 0 ]; then printf 'Error in some_function (ploop.c:1): the first line\\nFailed to do it: Device or resource busy\\n' >&2; fi
exit "\${STANDIN_EXIT:-0}"
`,
);
chmodSync(standIn, 0o755);

function container(): { dir: string; descriptor: string; delta: string } {
  const dir = fresh();
  const delta = join(dir, 'root.hds');
  qemuImg('create', '-q', '-f', 'parallels', '-o', 'cluster_size=1M', delta, '64M');
  writeFileSync(join(dir, 'DiskDescriptor.xml'), descriptorXml({ sizeSectors: 64 * 2048, blockSizeSectors: 2048, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }));
  // ploop's own tools leave the lock file behind; with it present, the folder must stay byte-identical.
  writeFileSync(join(dir, 'DiskDescriptor.xml.lck'), '');
  return { dir, descriptor: join(dir, 'DiskDescriptor.xml'), delta };
}

/** What the ploop module shows for a mounted image: the device, its delta, its first partition, and the module itself. */
function fakeSysfs(delta: string, options: { module?: boolean } = {}): string {
  const sys = join(fresh(), 'sys');
  const block = join(sys, 'block', DEVICE);
  mkdirSync(join(block, 'pdelta', '0'), { recursive: true });
  writeFileSync(join(block, 'pdelta', '0', 'image'), `${delta}\n`);
  writeFileSync(join(block, 'size'), `${DEVICE_SECTORS}\n`);
  writeFileSync(join(block, 'dev'), '182:432240\n');
  mkdirSync(join(block, `${DEVICE}p1`));
  writeFileSync(join(block, `${DEVICE}p1`, 'dev'), '182:432241\n');
  writeFileSync(join(block, `${DEVICE}p1`, 'size'), `${PARTITION_SECTORS}\n`);
  if (options.module ?? true) mkdirSync(join(sys, 'module', 'ploop', 'parameters'), { recursive: true });
  return sys;
}

function online(delta: string, extra: Record<string, string> = {}): { env: Record<string, string>; log: string } {
  const log = join(fresh(), 'argv');
  return { env: { PRL_DISK_TOOL_SYSFS: fakeSysfs(delta), PRL_DISK_TOOL_PLOOP: standIn, STANDIN_LOG: log, ...extra }, log };
}

function recorded(log: string): string[] {
  return readFileSync(log, 'utf8').trimEnd().split('\n');
}

describe('resize, compact and merge of a running container run the host\'s ploop with the original\'s arguments', () => {
  const cases: [string, string[], (descriptor: string) => string[]][] = [
    ['resize', ['resize', '--size', '2G'], (dd) => ['resize', '-s', '2048M', dd]],
    ['resize with --resize_partition and a K size', ['resize', '--size', '1572868K', '--resize_partition'], (dd) => ['resize', '-s', '1572868K', dd]],
    ['compact', ['compact'], (dd) => ['balloon', 'discard', '--automount', '--defrag', dd]],
    ['merge', ['merge'], (dd) => ['snapshot-merge', '-A', dd]],
  ];
  for (const [name, args, expected] of cases) {
    it(`${name}: ploop ${expected('DD').join(' ')}, its progress on stdout, nothing on stderr, the image untouched by us`, async () => {
      const { dir, descriptor, delta } = container();
      const { env, log } = online(delta);
      const before = sums(dir);
      const result = await runCli([args[0]!, '--hdd', dir, ...args.slice(1)], env);
      expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
      expect(recorded(log)).toEqual([standIn, ...expected(descriptor)]);
      expect(result.stdout).toContain('Resizing the image, 50%\n');
      // The dispatcher's progress regex, last match wins (Task_ConvertDisks.cpp).
      expect([...result.stdout.matchAll(/\b(\d+)\b\s*%/g)].pop()![1]).toBe('100');
      expect(sums(dir)).toEqual(before);
    });
  }

  it('a dry run prints the exact command and does not run it', async () => {
    const { dir, descriptor, delta } = container();
    const { env, log } = online(delta);
    for (const [args, argv] of [
      [['resize', '--size', '3G', '-n'], `resize -s 3072M ${descriptor}`],
      [['compact', '-n'], `balloon discard --automount --defrag ${descriptor}`],
      [['merge', '-n'], `snapshot-merge -A ${descriptor}`],
    ] as const) {
      const result = await runCli([args[0], '--hdd', dir, ...args.slice(1)], env);
      expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
      expect(result.stdout).toContain(`mounted as /dev/${DEVICE}): the host's ploop will`);
      expect(result.stdout).toContain(`1. Run ${standIn} ${argv}\n`);
      expect(existsSync(log)).toBe(false);
    }
    const json = await runCli(['resize', '--hdd', dir, '--size', '3G', '-n', '--json'], env);
    const report = JSON.parse(json.stdout.trim().split('\n').pop()!) as { command: string[]; online: boolean; sizeBeforeBytes: number };
    expect(report).toMatchObject({ command: [standIn, 'resize', '-s', '3072M', descriptor], online: true, sizeBeforeBytes: DEVICE_SECTORS * 512 });
    expect(existsSync(log)).toBe(false);
  });

  it('ploop failing: one sentence on stderr with its status and last message, exit 10; its lock error is exit 5', async () => {
    const { dir, delta } = container();
    const failing = online(delta, { STANDIN_EXIT: '3' });
    const result = await runCli(['resize', '--hdd', dir, '--size', '2G'], failing.env);
    expect(result.code).toBe(10);
    expect(result.stderr).toBe(
      `The host's ploop failed to resize the running container "${dir}" (exit status 3: Failed to do it: Device or resource busy); run "${standIn} resize -s 2048M ${join(dir, 'DiskDescriptor.xml')}" to see its whole output.\n`,
    );
    const locked = online(delta, { STANDIN_EXIT: '23' });
    const lockedResult = await runCli(['compact', '--hdd', dir], locked.env);
    expect(lockedResult.code).toBe(5);
    expect(lockedResult.stderr).toMatch(/^The host's ploop could not compact the running container "[^"]+" because another ploop operation holds the image \(exit status 23: Failed to do it: Device or resource busy\); try again when it has finished\.\n$/);
  });

  it('without the host\'s ploop or its kernel module: exit 6, one sentence naming what is missing, ploop not run', async () => {
    const { dir, delta } = container();
    const before = sums(dir);
    const noTool = online(delta, { PRL_DISK_TOOL_PLOOP: join(root, 'no-such-ploop') });
    const noModule = online(delta);
    noModule.env.PRL_DISK_TOOL_SYSFS = fakeSysfs(delta, { module: false });
    for (const [setup, missing] of [
      [noTool, `the host's ploop tool (${join(root, 'no-such-ploop')}) is not installed`],
      [noModule, `the ploop kernel module is not loaded (${noModule.env.PRL_DISK_TOOL_SYSFS}/module/ploop is absent)`],
    ] as const) {
      for (const args of [['resize', '--size', '2G'], ['compact'], ['merge'], ['resize', '--size', '2G', '-n']]) {
        const result = await runCli([args[0]!, '--hdd', dir, ...args.slice(1)], setup.env);
        expect(result.code, result.stderr).toBe(6);
        expect(result.stderr).toBe(
          `The ploop image "${dir}" is mounted by the kernel as /dev/${DEVICE} (a running container); stop the container first, then try again: changing it online needs the host's ploop, and ${missing}. Nothing was changed.\n`,
        );
        expect(existsSync(setup.log)).toBe(false);
      }
    }
    expect(sums(dir)).toEqual(before);
  });
});

describe('resize --info of a running container reads the mounted filesystem', () => {
  let mountPoint: string;
  beforeAll(() => {
    // A filesystem of our own whose use nobody else changes: the partition's mount (with a space, as mountinfo escapes it).
    mountPoint = join(root, 'ct root');
    mkdirSync(mountPoint);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'prl-online-test', mountPoint]);
    execFileSync('dd', ['if=/dev/zero', `of=${join(mountPoint, 'data')}`, 'bs=1M', 'count=20', 'status=none']);
  });
  afterAll(() => {
    execFileSync('umount', [mountPoint]);
  });

  function mountinfo(lines: string[]): string {
    const path = join(fresh(), 'mountinfo');
    writeFileSync(path, lines.join('\n') + '\n');
    return path;
  }

  it('Size from the device, Minimum = 4 clusters + the partition less its free space (statfs), as the dispatcher parses it', async () => {
    const { dir, delta } = container();
    const escaped = mountPoint.replace(/ /g, '\\040');
    const env = {
      PRL_DISK_TOOL_SYSFS: fakeSysfs(delta),
      PRL_DISK_TOOL_MOUNTINFO: mountinfo([
        '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
        `90 22 182:432241 /private ${escaped}-bind rw,relatime shared:50 - ext4 /dev/${DEVICE}p1 rw`,
        `91 22 182:432241 / ${escaped} rw,relatime shared:51 - ext4 /dev/${DEVICE}p1 rw`,
      ]),
    };
    // The oracle: coreutils' statfs of the mount point, not our code.
    const [blockSize, freeBlocks] = execFileSync('stat', ['-f', '-c', '%S %f', mountPoint], { encoding: 'utf8' }).trim().split(' ').map(Number);
    const minimumMiB = Math.ceil((4 * MiB + PARTITION_SECTORS * 512 - blockSize! * freeBlocks!) / MiB);
    expect(minimumMiB).toBeGreaterThanOrEqual(4 + 20);
    const result = await runCli(['resize', '--hdd', dir, '--info'], env);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    // Task_DiskImageResizer.cpp reads up to the first empty line, the numbers after "Size:" and "Minimum:" up to "M".
    const lines = result.stdout.split('\n');
    const number = (label: string): number => Number(/^\s*(\d+)M$/.exec(lines.find((line) => line.includes(`${label}:`))!.split(':')[1]!)![1]);
    expect(number('Size')).toBe(66);
    expect(number('Minimum')).toBe(minimumMiB);
    expect(number('Minimum without resizing the last partition')).toBe(66);
  });

  it('a device whose filesystem is not mounted: exit 6, one sentence', async () => {
    const { dir, delta } = container();
    const env = { PRL_DISK_TOOL_SYSFS: fakeSysfs(delta), PRL_DISK_TOOL_MOUNTINFO: mountinfo(['22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw']) };
    const result = await runCli(['resize', '--hdd', dir, '--info'], env);
    expect(result.code).toBe(6);
    expect(result.stderr).toBe(
      `The ploop image "${dir}" is attached to the kernel as /dev/${DEVICE}, but the filesystem of ${DEVICE}p1 is not mounted, so its use cannot be read; mount it (start the container) or stop the container, then try again. Nothing was changed.\n`,
    );
  });

  it('compact --info of a running container: numbers, and no promise to complete an interrupted operation (the in-use mark is the kernel\'s; compact goes through ploop)', async () => {
    const { dir, delta } = container();
    // The kernel marks the delta in use while it has the image mounted (m_DiskInUse at offset 44).
    const mark = Buffer.alloc(4);
    mark.writeUInt32LE(IN_USE_OPEN);
    const fd = openSync(delta, 'r+');
    writeSync(fd, mark, 0, 4, 44);
    closeSync(fd);
    expect(readDeltaTable(delta).inUse).toBe(IN_USE_OPEN);
    const { env, log } = online(delta);
    const before = sums(dir);
    const result = await runCli(['compact', '--hdd', dir, '--info'], env);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/Total blocks:\s+64\n/);
    expect(result.stdout).toContain(`compact hands it to the host's ploop (${standIn} balloon discard --automount --defrag ${join(dir, 'DiskDescriptor.xml')})`);
    expect(result.stdout).not.toMatch(/completes it first|interrupted operation/);
    expect(existsSync(log), 'a query never calls ploop').toBe(false);
    expect(sums(dir)).toEqual(before);
  });
});
