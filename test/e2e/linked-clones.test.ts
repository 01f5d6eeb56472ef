// Linked clones (issue 13, item 8): a VM whose disk is an overlay of a template's disk in a sibling folder, its
// backing format recorded. Resize, compact and merge --external work on it, and the template stays exactly as it
// was (checksum, inode, name), so that another clone of it reads the same content as before.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { buildImage } from '../factory/index.js';
import { runCli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';

const { fresh } = caseFolders('prl-linked-');
const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

describe('linked clones', () => {
  it('linked clones: a clone of a template in a sibling folder resizes, compacts and merges --external; the template and another clone are untouched', async () => {
    const dir = fresh();
    // A small template (GPT, ext4): the appliance start of compact is the cost, not its size.
    const template = (await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir: join(dir, 'template'), name: 'tpl', sizeMiB: 64, filesMiB: 4, deletedMiB: 4, seed: 13 })).dataFile;
    const clone = (name: string): string => {
      mkdirSync(join(dir, name), { recursive: true });
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', `../template/${basename(template)}`, join(dir, name, 'disk.qcow2'));
      return join(dir, name, 'disk.qcow2');
    };
    const [one, two] = [clone('vm1'), clone('vm2')];
    const reference = join(dir, 'vm2-before.qcow2');
    sh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'qcow2', two, reference);
    const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
    const templateBefore = { sha: sha(template), ino: statSync(template).ino };
    const steps: string[] = [];
    for (const args of [['resize', '--size', '96M'], ['compact'], ['merge', '--external']]) {
      const started = Date.now();
      const result = await runCli([args[0]!, '--hdd', one, ...args.slice(1)], { LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg' });
      console.log(`linked clone: ${args.join(' ')}: exit ${result.code} in ${Date.now() - started} ms`);
      if (result.code !== 0) steps.push(`${args.join(' ')}: exit ${result.code}: ${result.stderr.trim()}`);
    }
    expect(steps).toEqual([]);
    expect(sha(template), 'the template file changed').toBe(templateBefore.sha);
    expect(statSync(template).ino, 'the template was moved or replaced').toBe(templateBefore.ino);
    expect(sh('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', reference, two).trim()).toBe('Images are identical.');
    const merged = JSON.parse(sh('qemu-img', 'info', '--output=json', '-f', 'qcow2', one)) as Record<string, unknown>;
    expect(merged['backing-filename'], 'the merged clone still has a backing file').toBeUndefined();
    expect(merged['virtual-size']).toBe(96 * 1024 * 1024);
    sh('qemu-img', 'check', '-q', '-f', 'qcow2', one);
  }, 10 * 60_000);
});
