// The built CLI's contract without an appliance: help, paths, exit codes, locks, and a VM holding the image.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, rmSync, copyFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, runCliSync } from '../helpers/cli.js';
import { startPausedVm } from '../helpers/holders.js';

let dir: string;
let qcow2: string;
let ploopFolder: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'prl-cli-'));
  qcow2 = join(dir, 'vm.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
  ploopFolder = join(dir, 'ct');
  mkdirSync(ploopFolder);
  execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', join(ploopFolder, 'root.hds'), '64M']);
  writeFileSync(
    join(ploopFolder, 'DiskDescriptor.xml'),
    `<?xml version="1.0"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters><Disk_size>131072</Disk_size><Cylinders>8</Cylinders><Heads>16</Heads><Sectors>1024</Sectors><Padding>0</Padding></Disk_Parameters>
  <StorageData><Storage><Start>0</Start><End>131072</End><Blocksize>2048</Blocksize>
    <Image><GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID><Type>Compressed</Type><File>root.hds</File></Image>
  </Storage></StorageData>
  <Snapshots><TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>
    <Shot><GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>
  </Snapshots>
</Parallels_disk_image>
`,
  );
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('help and usage', () => {
  it.each([['--help'], ['-h'], ['--usage'], ['compact', '--help']])('%s prints to stdout and exits 0', (...args) => {
    const result = runCliSync(args);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('prl_disk_tool resize  --hdd PATH --size SIZE');
    expect(result.stderr).toBe('');
  });

  it('an argument error prints one sentence and the usage on stderr, exit 2', () => {
    const result = runCliSync(['resize', '--hdd', qcow2, '--size', '1.5G']);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr.split('\n')[0]).toBe('Invalid size "1.5G": give a whole number with an optional unit K, M, G or T, such as 20G.');
    expect(result.stderr).toContain('Usage:');
  });

  it('--json turns an error into one JSON object on stdout as well', () => {
    const result = runCliSync(['merge', '--hdd', join(dir, 'missing.qcow2'), '--json']);
    expect(result.code).toBe(3);
    expect(JSON.parse(result.stdout)).toMatchObject({ error: { kind: 'invalid-path', exitCode: 3 } });
  });
});

describe('--hdd resolution', () => {
  let server: Server;
  beforeAll(async () => {
    mkdirSync(join(dir, 'empty-folder'));
    symlinkSync(join(dir, 'loop-b'), join(dir, 'loop-a'));
    symlinkSync(join(dir, 'loop-a'), join(dir, 'loop-b'));
    server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir, 'socket'), resolve));
  });
  afterAll(() => server.close());

  it.each([
    ['missing.qcow2', /^Invalid disk path ".*missing.qcow2": no such file or folder/],
    ['empty-folder', /^Invalid disk path ".*empty-folder": the folder holds no DiskDescriptor.xml/],
    ['loop-a', /^Invalid disk path ".*loop-a": it is a symbolic link loop/],
    ['socket', /^Invalid disk path ".*socket": it is not a regular file or a folder/],
  ])('%s → exit 3', (name, message) => {
    const result = runCliSync(['merge', '--hdd', join(dir, name)]);
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(message);
  });

  it('a device is not an image', () => {
    const result = runCliSync(['compact', '--hdd', '/dev/null']);
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/not a regular file or a folder/);
  });
});

function holdFlock(path: string, mode: '-s' | '-x'): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    // Detached, so that killing the group also ends the shell that inherited the locked descriptor.
    const child = spawn('flock', [mode, path, '-c', 'echo locked; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    child.stdout.once('data', () => resolve(child));
    child.on('error', reject);
  });
}

describe('locking (flock, never waiting)', () => {
  it.each([['-x'], ['-s']] as const)('a writer is refused while another process holds the image (%s)', async (mode) => {
    const holder = await holdFlock(qcow2, mode);
    try {
      const result = await runCli(['merge', '--hdd', qcow2]);
      expect(result.code).toBe(5);
      expect(result.stderr).toBe(`The specified disk image "${qcow2}" is locked by another process. Wait for it to finish and try again; "fuser -v ${qcow2}" shows which process holds the lock.\n`);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });

  it('for ploop the lock is DiskDescriptor.xml.lck, whichever --hdd form names the image', async () => {
    const lockFile = join(ploopFolder, 'DiskDescriptor.xml.lck');
    writeFileSync(lockFile, '');
    const holder = await holdFlock(lockFile, '-x');
    try {
      for (const hdd of [ploopFolder, join(ploopFolder, 'root.hds'), join(ploopFolder, 'DiskDescriptor.xml')]) {
        const result = await runCli(['convert', '--hdd', hdd, '--plain']);
        expect(result.code).toBe(5);
        expect(result.stderr).toBe(`The specified disk image "${hdd}" is locked by another process. Wait for it to finish and try again; "fuser -v ${lockFile}" shows which process holds the lock.\n`);
      }
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });

  it('readers share the lock: several --info runs and a shared holder do not exclude each other', async () => {
    const holder = await holdFlock(qcow2, '-s');
    try {
      const results = await Promise.all([1, 2, 3].map(() => runCli(['resize', '--hdd', qcow2, '--info', '--json'])));
      for (const result of results) {
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr).not.toMatch(/locked by another process/);
      }
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });

  it('a reader is refused while a writer holds the lock', async () => {
    const holder = await holdFlock(qcow2, '-x');
    try {
      const result = await runCli(['resize', '--hdd', qcow2, '--info']);
      expect(result.code).toBe(5);
      expect(result.stderr).toBe(`The specified disk image "${qcow2}" is locked by another process. Wait for it to finish and try again; "fuser -v ${qcow2}" shows which process holds the lock.\n`);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });
});

describe('a running VM holds the image', () => {
  it('a modifying command refuses it and says to stop the VM; nothing changes', async () => {
    const image = join(dir, 'running.qcow2');
    copyFileSync(qcow2, image);
    execFileSync('qemu-img', ['snapshot', '--image-opts', '-c', 'snap1', `driver=qcow2,file.filename=${image}`]);
    const before = execFileSync('sha256sum', [image], { encoding: 'utf8' });
    const vm = await startPausedVm(image, 'qcow2');
    try {
      const result = await runCli(['merge', '--hdd', image]);
      expect(result.code).toBe(6);
      expect(result.stderr).toMatch(/in use by a running virtual machine; stop the VM first/);
    } finally {
      vm.kill('SIGKILL');
    }
    expect(execFileSync('sha256sum', [image], { encoding: 'utf8' })).toBe(before);
  });
});
