// The native ext minimum against the host's own `resize2fs -P -f` (e2fsprogs 1.47, what the appliance runs) on
// filesystems mke2fs made in sparse files, with files written and deleted by debugfs (no mount): block sizes,
// feature sets, inode densities, bigalloc, meta_bg, sparse_super2, and a sparse 1 TiB filesystem.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readExtLayout } from '../../../src/fs/ext-layout.js';
import { extMinimumBlocks } from '../../../src/fs/ext-minimum.js';
import { ext4, extMargin } from '../../../src/fs/ext.js';
import type { ContainerReader } from '../../../src/fs/types.js';
import { caseFolders } from '../../helpers/dirs.js';

const { fresh } = caseFolders('ext-minimum-');
const LAZY = 'lazy_itable_init=1,lazy_journal_init=1,nodiscard';

function fileReader(path: string): ContainerReader {
  return {
    sizeBytes: statSync(path).size,
    async read(offset, length) {
      const fd = openSync(path, 'r');
      try {
        const out = Buffer.alloc(length);
        let done = 0;
        while (done < length) {
          const n = readSync(fd, out, done, length - done, offset + done);
          if (n === 0) break;
          done += n;
        }
        return out;
      } finally {
        closeSync(fd);
      }
    },
  };
}

/** mke2fs on a sparse file, then `files` files of `fileKiB` each written and every third one deleted again. */
function makeFs(type: string, size: string, options: string[], files: number, fileKiB: number): string {
  const dir = fresh();
  const image = join(dir, 'fs.img');
  execFileSync('truncate', ['-s', size, image]);
  execFileSync('mke2fs', ['-F', '-q', '-t', type, '-E', LAZY, ...options, image], { stdio: 'ignore' });
  if (files > 0) {
    const source = join(dir, 'data');
    writeFileSync(source, Buffer.alloc(fileKiB * 1024, 0x5a)); // not zeros: debugfs would leave holes
    const commands = ['mkdir d'];
    for (let i = 0; i < files; i++) commands.push(`write ${source} d/f${i}`);
    for (let i = 0; i < files; i += 3) commands.push(`rm d/f${i}`);
    writeFileSync(join(dir, 'cmds'), commands.join('\n') + '\n');
    execFileSync('debugfs', ['-w', '-f', join(dir, 'cmds'), image], { stdio: 'ignore' });
  }
  return image;
}

function hostMinimum(image: string): number {
  const out = execFileSync('resize2fs', ['-P', '-f', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const match = /Estimated minimum size of the filesystem: (\d+)/.exec(out);
  if (!match) throw new Error(`resize2fs -P printed no minimum: ${out}`);
  return Number(match[1]);
}

async function nativeMinimum(image: string): Promise<number> {
  const decoded = await readExtLayout(fileReader(image));
  if ('uncertain' in decoded) throw new Error(`uncertain: ${decoded.uncertain}`);
  const counted = extMinimumBlocks(decoded.layout);
  if ('uncertain' in counted) throw new Error(`uncertain: ${counted.uncertain}`);
  return counted.blocks;
}

const CORPUS: [string, string, string[], number, number][] = [
  ['ext2', '256M', [], 12, 2048],
  ['ext3', '256M', [], 12, 2048],
  ['ext4', '256M', [], 12, 2048],
  ['ext4', '300M', ['-b', '1024'], 20, 1024],
  ['ext4', '300M', ['-b', '2048'], 20, 1024],
  ['ext4', '512M', ['-O', '^flex_bg'], 30, 4096],
  ['ext4', '512M', ['-O', '^64bit'], 30, 4096],
  ['ext4', '512M', ['-O', '^resize_inode,meta_bg'], 30, 4096],
  ['ext4', '300M', ['-b', '1024', '-O', '^resize_inode,meta_bg'], 20, 1024],
  ['ext4', '512M', ['-O', 'sparse_super2'], 30, 4096],
  ['ext4', '512M', ['-G', '4'], 30, 4096],
  ['ext4', '1G', ['-G', '64'], 30, 4096],
  ['ext4', '512M', ['-N', '100000'], 30, 2048],
  ['ext4', '512M', ['-i', '65536'], 30, 2048],
  ['ext4', '512M', ['-I', '128'], 30, 2048],
  ['ext4', '1G', ['-O', 'bigalloc', '-C', '65536'], 20, 4096],
  ['ext4', '512M', ['-O', '^metadata_csum,uninit_bg'], 30, 4096],
  ['ext3', '300M', ['-b', '1024'], 20, 1024],
  ['ext2', '300M', ['-b', '2048', '-O', '^sparse_super,^resize_inode'], 20, 1024],
  ['ext4', '20G', [], 40, 8192],
  ['ext4', '64M', [], 0, 0],
];

describe('native ext minimum = resize2fs -P', () => {
  for (const [type, size, options, files, fileKiB] of CORPUS) {
    it(`${type} ${size} ${options.join(' ') || '(defaults)'}`, async () => {
      const image = makeFs(type, size, options, files, fileKiB);
      expect(await nativeMinimum(image)).toBe(hostMinimum(image));
    });
  }

  it('a sparse 1 TiB ext4', async () => {
    const image = makeFs('ext4', '1T', [], 10, 4096);
    expect(await nativeMinimum(image)).toBe(hostMinimum(image));
  }, 120_000);

  it("gives resize --info's Minimum: the appliance's number with the ext margin", async () => {
    const image = makeFs('ext4', '512M', [], 30, 4096);
    const blocks = hostMinimum(image);
    const expected = blocks * 4096 + extMargin(blocks * 4096);
    expect(await ext4.measureNatively!(fileReader(image), { type: 'ext4', sizeBytes: 512 * 1024 * 1024 })).toEqual({ minimumBytes: expected, warnings: [] });
  });
});
