// convert's copy check: when qemu-img check finds the converted copy corrupt, convert must refuse, keep the image
// byte-identical and leave no temporary behind (issue 17 item 3). A fake qemu-img first on PATH forwards every
// call to the real one except `check` of our .prl-tmp copy, which it reports as corrupt the way qemu-img does
// (JSON on stdout, exit 2). No appliance.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo, sums } from '../helpers/images.js';
import { runCli } from '../helpers/cli.js';
import { caseFolders } from '../helpers/dirs.js';

const { fresh: freshDir } = caseFolders('prl-convert-check-');

const realQemuImg = spawnSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).stdout.trim();

/** A bin folder whose qemu-img reports any .prl-tmp file as corrupt and logs that it did so. */
function fakeQemuImgBin(dir: string): { path: string; marker: string } {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const marker = join(dir, 'faked-checks.log');
  const script = `#!/bin/sh
if [ "$1" = check ]; then
  for last; do :; done
  case "$last" in
    *.prl-tmp)
      echo "$last" >> '${marker}'
      echo '{"image-end-offset": 262144, "total-clusters": 4096, "check-errors": 0, "corruptions": 1, "filename": "'"$last"'", "format": "qcow2"}'
      exit 2 ;;
  esac
fi
exec '${realQemuImg}' "$@"
`;
  writeFileSync(join(bin, 'qemu-img'), script);
  chmodSync(join(bin, 'qemu-img'), 0o755);
  return { path: `${bin}:${process.env.PATH ?? ''}`, marker };
}

describe('convert refuses a copy that fails qemu-img check', () => {
  it.each(['--plain', '--expanding'])('%s: refused, image byte-identical, no temporary left', async (mode) => {
    expect(realQemuImg, 'qemu-img must be installed').not.toBe('');
    const root = freshDir();
    const dir = join(root, 'vm');
    mkdirSync(dir);
    const file = join(dir, 'vm.qcow2');
    // Start from the other allocation so that the convert has something to do.
    qemuImg('create', '-q', '-f', 'qcow2', ...(mode === '--expanding' ? ['-o', 'preallocation=full'] : []), file, '64M');
    qemuIo(file, 'write -P 0x5a 0 4M', 'write -P 0x3c 32M 2M');
    const fake = fakeQemuImgBin(root);
    const before = sums(dir);

    const result = await runCli(['convert', mode, '--hdd', file], { PATH: fake.path });

    expect(existsSync(fake.marker), `the fake check never ran; stderr: ${result.stderr}`).toBe(true);
    expect(readFileSync(fake.marker, 'utf8')).toMatch(/\.prl-tmp\n/);
    expect(result.code, result.stderr).toBe(10);
    expect(result.stderr).toMatch(/fails qemu-img check/);
    expect(sums(dir)).toEqual(before);
    expect(readdirSync(dir)).toEqual(['vm.qcow2']);
  });
});
