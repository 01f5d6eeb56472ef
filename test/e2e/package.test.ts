// The packages install the tool where Virtuozzo's dispatcher looks (/usr/sbin/prl_disk_tool): the .deb is
// installed on this machine, run as the dispatcher runs it, and removed without leftovers; the RPM spec builds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { caseFolders } from '../helpers/dirs.js';
import { runCommand } from '../helpers/cli.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = here.includes('/dist/') ? join(here, '..', '..', '..') : join(here, '..', '..');
const folders = caseFolders('prl-package-');

/** Builds both packages without blocking the worker (vitest's RPC times out when the event loop stalls). */
async function built(): Promise<{ deb: string; rpm: string }> {
  const result = await runCommand(join(repo, 'scripts', 'package.sh'), ['all']);
  if (result.code !== 0) throw new Error(`scripts/package.sh failed (exit ${result.code}): ${result.stderr}`);
  const lines = result.stdout.trim().split('\n');
  const deb = lines.find((line) => line.endsWith('.deb'));
  const rpm = lines.find((line) => line.endsWith('.rpm'));
  if (deb === undefined || rpm === undefined) throw new Error(`scripts/package.sh printed no package: ${lines.join(' | ')}`);
  return { deb: join(repo, deb), rpm: join(repo, rpm) };
}

function installed(): boolean {
  return spawnSync('dpkg-query', ['-W', '-f=${Status}', 'prl-disk-tool'], { encoding: 'utf8' }).stdout.includes('install ok installed');
}

/** A node that did not come as a nodejs package (nvm, a tarball) cannot satisfy the dependency: only then is it forced. */
function nodeFlags(): string[] {
  return spawnSync('dpkg-query', ['-W', 'nodejs']).status === 0 ? [] : ['--force-depends'];
}

/** dpkg runs man-db's trigger, which takes seconds: run it without blocking the worker either. */
async function dpkg(...args: string[]): Promise<void> {
  const result = await runCommand('dpkg', args);
  if (result.code !== 0) throw new Error(`dpkg ${args.join(' ')} failed (exit ${result.code}): ${result.stderr}`);
}

let packages: { deb: string; rpm: string };

beforeAll(async () => {
  if (installed()) throw new Error('prl-disk-tool is already installed on this machine; this test installs and removes it: remove it first (dpkg --purge prl-disk-tool).');
  packages = await built();
});

afterAll(async () => {
  if (installed()) await dpkg('--purge', ...nodeFlags(), 'prl-disk-tool');
});

describe('the Debian package', () => {
  it('declares the tools it runs and Node.js 20 or newer', () => {
    const depends = execFileSync('dpkg-deb', ['-f', packages.deb, 'Depends'], { encoding: 'utf8' });
    for (const dependency of ['nodejs (>= 20)', 'qemu-utils', 'libguestfs-tools', 'guestfs-tools', 'e2fsprogs', 'xfsprogs', 'btrfs-progs', 'ntfs-3g', 'fdisk', 'gdisk', 'lvm2']) {
      expect(depends).toContain(dependency);
    }
  });

  it('installs /usr/sbin/prl_disk_tool, which runs as the dispatcher runs it, and is removed without leftovers', async () => {
    await dpkg('-i', ...nodeFlags(), packages.deb);
    const files = execFileSync('dpkg', ['-L', 'prl-disk-tool'], { encoding: 'utf8' }).trim().split('\n');
    for (const path of ['/usr/sbin/prl_disk_tool', '/usr/sbin/prl-disk-tool', '/usr/lib/prl-disk-tool/dist/src/cli/main.js', '/usr/share/man/man8/prl_disk_tool.8.gz']) {
      expect(files).toContain(path);
    }
    expect(execFileSync('man', ['-w', '8', 'prl_disk_tool'], { encoding: 'utf8' }).trim()).toBe('/usr/share/man/man8/prl_disk_tool.8.gz');

    // The dispatcher's environment: a plain PATH, no npm prefix, a working folder that is not the repository.
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
    for (const command of ['/usr/sbin/prl_disk_tool', '/usr/sbin/prl-disk-tool']) {
      const help = await runCommand(command, ['--help'], env);
      expect({ code: help.code, stderr: help.stderr }).toEqual({ code: 0, stderr: '' });
      expect(help.stdout).toContain('prl_disk_tool resize');
    }
    const image = join(folders.fresh(), 'vm.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    const info = await runCommand('/usr/sbin/prl_disk_tool', ['resize', '--hdd', image, '--info'], env);
    expect({ code: info.code, stderr: info.stderr }).toEqual({ code: 0, stderr: '' });
    expect(info.stdout).toMatch(/^Disk information:\n\tSize:\t+ +64M\n\tMinimum:\t+ +\d+M\n/);

    await dpkg('--purge', ...nodeFlags(), 'prl-disk-tool');
    expect(installed()).toBe(false);
    expect(spawnSync('dpkg', ['-L', 'prl-disk-tool']).status).not.toBe(0);
    const left = files.filter((path) => path.includes('prl') && existsSync(path));
    expect(left).toEqual([]);
    expect(existsSync('/usr/lib/prl-disk-tool')).toBe(false);
  });
});

describe('the RPM', () => {
  it('is built by rpmbuild from packaging/rpm/prl-disk-tool.spec with the same files and real dependencies', () => {
    const files = execFileSync('rpm', ['-qpl', packages.rpm], { encoding: 'utf8' }).trim().split('\n');
    for (const path of ['/usr/sbin/prl_disk_tool', '/usr/sbin/prl-disk-tool', '/usr/lib/prl-disk-tool/dist/src/cli/main.js', '/usr/share/man/man8/prl_disk_tool.8.gz']) {
      expect(files).toContain(path);
    }
    expect(files.filter((path) => !path.startsWith('/usr/lib/prl-disk-tool') && !path.startsWith('/usr/share/') && !path.startsWith('/usr/sbin/prl'))).toEqual([]);
    const requires = execFileSync('rpm', ['-qpR', packages.rpm], { encoding: 'utf8' });
    for (const dependency of ['nodejs >= 1:20', 'qemu-img', 'libguestfs', 'guestfs-tools', 'e2fsprogs', 'xfsprogs', 'btrfs-progs', 'ntfs-3g', 'gdisk', 'lvm2']) {
      expect(requires).toContain(dependency);
    }
    expect(readdirSync(dirname(packages.rpm))).toContain(packages.rpm.split('/').pop());
  });
});
