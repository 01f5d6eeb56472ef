// convert --plain / --expanding on real qcow2 images: host allocation within bounds (st_blocks), content checked
// with qemu-img compare against a copy made before, refusals and --dry-run change no byte, kill -9 and SIGINT
// mid-copy leave the image untouched and no temporary behind the next run.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo, info, identical, allocated, sums } from '../helpers/images.js';
import { cli, progressAt, signalAtProgress } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';
import { holdFlock, holdOpen } from '../helpers/holders.js';

const MiB = 1024 * 1024;
const { fresh: freshDir } = caseFolders('prl-convert-e2e-');

function checkClean(file: string): void {
  const result = spawnSync('qemu-img', ['check', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' });
  expect(result.status, `qemu-img check ${file}: ${result.stdout}`).toBe(0);
}

/** 256 MiB virtual, 48 MiB of patterned data (4 MiB of it zeroed again) and a range written with zero bytes. */
function buildImage(dir: string, options = ''): string {
  const file = join(dir, 'vm.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', ...(options ? ['-o', options] : []), file, '256M');
  qemuIo(file, 'write -P 0x5a 0 32M', 'write -P 0x3c 128M 16M', 'write -z 16M 4M', 'write -P 0 200M 8M');
  return file;
}

describe('convert on qcow2', () => {
  it('--plain then --expanding: allocation within bounds, content identical, options, mode kept, repeat is a no-op', async () => {
    const dir = freshDir();
    const file = buildImage(dir, 'cluster_size=131072');
    chmodSync(file, 0o640);
    qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', file, join(dir, 'flat.ref'));
    const virtual = 256 * MiB;

    const plain = await cli('convert', '--plain', '--hdd', file, '--json');
    expect(plain.status, plain.stderr).toBe(0);
    expect(allocated(file)).toBeGreaterThanOrEqual(virtual);
    const metadataBytes = JSON.parse(qemuImg('measure', '--output=json', '-O', 'qcow2', '-o', 'cluster_size=131072', '--size', '256M')).required as number;
    expect(allocated(file)).toBeLessThanOrEqual(virtual + metadataBytes + virtual / 100);
    expect(plain.json!.hostBytesAfter).toBe(allocated(file));
    expect(identical(join(dir, 'flat.ref'), file)).toBe(true);
    expect(info(file)['cluster-size']).toBe(131072);
    expect(statSync(file).mode & 0o777).toBe(0o640);
    checkClean(file);

    const before = sums(dir);
    const again = await cli('convert', '--plain', '--hdd', file, '--json');
    expect(again.status).toBe(0);
    expect(again.json!.unchanged).toBe(true);
    expect(sums(dir)).toEqual(before);

    const expanding = await cli('convert', '--expanding', '--hdd', file, '--json');
    expect(expanding.status, expanding.stderr).toBe(0);
    const dataBytes = 44 * MiB; // 48 MiB written, 4 MiB of it zeroed again
    expect(allocated(file)).toBeGreaterThanOrEqual(dataBytes);
    expect(allocated(file)).toBeLessThanOrEqual(dataBytes * 1.02 + 4 * MiB);
    expect(identical(join(dir, 'flat.ref'), file)).toBe(true);
    expect(info(file)['cluster-size']).toBe(131072);
    checkClean(file);
    expect(readdirSync(dir).sort()).toEqual(['flat.ref', 'vm.qcow2']);
  });

  it('--plain and --expanding keep what the file carried: owner, mode, user./trusted./security. attributes, the POSIX ACL', async () => {
    const dir = freshDir();
    const file = buildImage(dir);
    const tool = (cmd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } => spawnSync(cmd, args, { encoding: 'utf8' });
    const must = (cmd: string, ...args: string[]): string => {
      const result = tool(cmd, ...args);
      expect(result.status, `${cmd} ${args.join(' ')}: ${result.stderr}`).toBe(0);
      return result.stdout;
    };
    chownSync(file, 4321, 8765);
    chmodSync(file, 0o2640);
    must('setfattr', '-n', 'user.vm-owner', '-v', 'tenant 42', file);
    must('setfattr', '-n', 'trusted.overlay.opaque', '-v', '0x00ff7f', file);
    must('setfacl', '-m', 'u:1234:rw,g:2345:r', file);
    // An SELinux-style label, where the filesystem takes one (without an SELinux policy the kernel stores it as is).
    const labelled = tool('setfattr', '-n', 'security.selinux', '-v', 'system_u:object_r:svirt_image_t:s0', file).status === 0;
    if (!labelled) console.warn('this filesystem takes no security.selinux attribute: that part is not checked here');
    // The independent account: getfattr's dump of every namespace (the ACL is system.posix_acl_access), getfacl, stat.
    const carried = (): string[] => [
      must('getfattr', '--absolute-names', '-d', '-m', '-', '-e', 'hex', file).split('\n').slice(1).join('\n'),
      must('getfacl', '-cn', file),
      must('stat', '-c', '%u %g %a', file),
    ];
    const before = carried();
    expect(before[0]).toMatch(/user\.vm-owner=0x74656e616e74203432/);
    expect(before[0]).toMatch(/trusted\.overlay\.opaque=0x00ff7f/);
    expect(before[0]).toMatch(/system\.posix_acl_access=/);
    if (labelled) expect(before[0]).toMatch(/security\.selinux=/);
    // The set-gid bit survives too (chown clears it); the group bits are the ACL's mask (rw).
    expect(before[2]).toBe('4321 8765 2660\n');
    const inode = statSync(file).ino;
    for (const target of ['--plain', '--expanding']) {
      const result = await cli('convert', target, '--hdd', file);
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).toBe('');
      expect(carried(), target).toEqual(before);
    }
    // The copy-and-rename did happen (a new inode), so the attributes were carried, not left in place.
    expect(statSync(file).ino).not.toBe(inode);
    checkClean(file);
  });

  it('refuses a backing file, internal snapshots, an image in use, a locked image; --dry-run; none changes a byte', async () => {
    const cases: [string, (file: string, dir: string) => (() => void) | void, number, RegExp][] = [
      ['backing file', (file, dir) => {
        const base = join(dir, 'base.qcow2');
        qemuImg('create', '-q', '-f', 'qcow2', base, '256M');
        qemuImg('rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', base, file);
      }, 8, /merge --external/],
      ['snapshots', (file) => void qemuImg('snapshot', '--image-opts', '-c', 's', `driver=qcow2,file.driver=file,file.filename=${file}`), 8, /prl_disk_tool merge --hdd/],
      ['in use', (file) => holdOpen(file), 6, /in use/],
      ['locked', (file) => holdFlock(file), 5, /locked by another process/],
      ['dry run', () => undefined, 0, /Dry run: nothing was changed[\s\S]*preallocation=falloc/],
    ];
    for (const [name, prepare, status, message] of cases) {
      const dir = freshDir();
      const file = buildImage(dir);
      const release = prepare(file, dir);
      await new Promise((r) => setTimeout(r, 300));
      const before = sums(dir);
      const result = await cli('convert', '--plain', '--hdd', file, ...(name === 'dry run' ? ['-n'] : []));
      release?.();
      expect(result.status, `${name}: ${result.stderr}`).toBe(status);
      expect(result.stdout + result.stderr, name).toMatch(message);
      expect(sums(dir), name).toEqual(before);
    }
  });

  it('kill -9 mid-copy leaves the image byte-identical; the next run removes the stale copy and converts', async () => {
    const dir = freshDir();
    const file = join(dir, 'vm.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', file, '1G');
    qemuIo(file, 'write -P 0x77 0 384M');
    qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', file, join(dir, 'flat.ref'));
    const before = sums(dir);
    const { seen } = await signalAtProgress(['convert', '--plain', '--hdd', file], progressAt(10), 'SIGKILL');
    expect(seen).toBeGreaterThanOrEqual(10);
    const left = readdirSync(dir).filter((name) => name.endsWith('.prl-tmp'));
    expect(left).toHaveLength(1);
    const after = sums(dir);
    expect(after['vm.qcow2']).toBe(before['vm.qcow2']);
    checkClean(file);

    const rerun = await cli('convert', '--plain', '--hdd', file);
    expect(rerun.status, rerun.stderr).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['flat.ref', 'vm.qcow2']);
    expect(identical(join(dir, 'flat.ref'), file)).toBe(true);
    expect(allocated(file)).toBeGreaterThanOrEqual(1024 * MiB);
  });

  it('SIGINT mid-copy exits 130, removes the copy and leaves the image byte-identical', async () => {
    const dir = freshDir();
    const file = join(dir, 'vm.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', file, '1G');
    qemuIo(file, 'write -P 0x78 0 384M');
    const before = sums(dir);
    const { seen, status } = await signalAtProgress(['convert', '--plain', '--hdd', file], progressAt(10), 'SIGINT');
    expect(seen).toBeGreaterThanOrEqual(10);
    expect(status).toBe(130);
    expect(sums(dir)).toEqual(before);
  });
});
