// Bad input: corrupt or truncated qcow2 and ploop files, broken partition tables, a garbage filesystem, hostile
// DiskDescriptor.xml files, --hdd naming what is not an image, sizes out of range. Every one must end in one clear
// sentence on stderr, a documented exit code that is neither 0 nor 1 (internal error), and no byte changed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, readSync, rmSync, symlinkSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import type { BuiltImage, ImageFormat } from '../factory/index.js';
import { clearError, cloneImage, fingerprint, fingerprintDiff, runCli, workDir } from './harness.js';
import { standard } from './images.js';
import { Tally } from './summary.js';

const tally = new Tally('bad-input');
const DOCUMENTED = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
let root: string;
const pristine: Partial<Record<string, { image: BuiltImage; dir: string }>> = {};
let counter = 0;

beforeAll(async () => {
  root = workDir('bad');
  for (const [key, format, table] of [['qcow2', 'qcow2', 'gpt'], ['ploop', 'ploop', 'gpt'], ['qcow2-mbr', 'qcow2', 'mbr']] as const) {
    const dir = join(root, `pristine-${key}`);
    pristine[key] = { image: await standard(format, dir, { table }), dir };
  }
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  tally.flush();
  expect(tally.lost).toBe(0);
});

function fresh(key: 'qcow2' | 'ploop' | 'qcow2-mbr'): BuiltImage {
  const source = pristine[key]!;
  return cloneImage(source.image, source.dir, join(root, `case-${++counter}`));
}

function poke(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

function peek(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  const out = Buffer.alloc(length);
  readSync(fd, out, 0, length, offset);
  closeSync(fd);
  return out;
}

function u64(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(value);
  return b;
}

/** Writes `bytes` at a guest offset through qemu-io, so the container stays valid and only the guest data is bad. */
function pokeGuest(image: BuiltImage, offset: number, bytes: Buffer): void {
  const src = join(root, `poke-${counter}`);
  writeFileSync(src, bytes);
  const fmt = image.format === 'qcow2' ? 'qcow2' : 'parallels';
  const r = spawnSync('qemu-io', ['-f', fmt, '-c', `write -s ${src} ${offset} ${bytes.length}`, image.dataFile], { encoding: 'utf8' });
  rmSync(src);
  if (r.status !== 0 || /error|failed/i.test(r.stdout + r.stderr)) throw new Error(`qemu-io write: ${r.stdout} ${r.stderr}`);
}

/**
 * Runs every command on the prepared input with --json and checks: exit code documented and not 0/1, one clear
 * sentence on stderr, the files of `folder` unchanged (sha256 of each).
 */
async function refuses(what: string, folder: string, commands: string[][], format: ImageFormat | '-' = '-', expectCodes: number[] = DOCUMENTED): Promise<string[]> {
  const started = Date.now();
  const failures: string[] = [];
  const codes: string[] = [];
  let failed = 0;
  for (const args of commands) {
    const count = failures.length;
    const before = fingerprint(folder);
    const result = await runCli([...args, '--json']);
    codes.push(`${args[0]}${args.includes('--resize_partition') ? ' -r' : ''}${args.includes('--info') ? ' -i' : ''}:${result.code}`);
    const label = `${what}: ${args.join(' ')}`;
    if (!expectCodes.includes(result.code ?? -1)) failures.push(`${label}: exit ${result.code}, expected one of ${expectCodes.join(',')}; stderr: ${result.stderr.trim().slice(0, 600)}`);
    else {
      const unclear = clearError(result);
      if (unclear !== undefined) failures.push(`${label}: ${unclear}`);
    }
    const changed = fingerprintDiff(before, fingerprint(folder)).filter((d) => !d.endsWith('DiskDescriptor.xml.lck'));
    if (changed.length > 0) failures.push(`${label}: files changed: ${changed.join(', ')}`);
    if (failures.length > count) failed++;
  }
  tally.add({ operation: what, format, fault: 'bad input', tried: commands.length, passed: commands.length - failed, lost: 0, ms: Date.now() - started, note: codes.join(' ') });
  return failures;
}

const modifying = (hdd: string): string[][] => [
  ['resize', '--hdd', hdd, '--size', '384M'],
  ['convert', '--hdd', hdd, '--plain'],
  ['merge', '--hdd', hdd],
  ['compact', '--hdd', hdd],
];

// B3 (resize --info answering on corrupt images) is fixed: --info checks the image first, so every case is a plain test.

/** `resize --info` on each corrupt image: exit 4 with one clear sentence; the known failures are marked. */
function infoCases(key: 'qcow2' | 'ploop', cases: [string, (image: BuiltImage) => void][]): void {
  for (const [name, corrupt] of cases) {
    const body = async (): Promise<void> => {
      const image = fresh(key);
      corrupt(image);
      const folder = key === 'qcow2' ? dirname(image.dataFile) : image.hdd;
      expect(await refuses(`${key} ${name}, --info`, folder, [['resize', '--hdd', image.hdd, '--info']], key, [4])).toEqual([]);
    };
    it(`${name}: resize --info says the image is corrupt (exit 4)`, body);
  }
}

describe('corrupt qcow2', () => {
  const cases: [string, (image: BuiltImage) => void][] = [
    ['truncated to 0 bytes', (i) => truncateSync(i.dataFile, 0)],
    ['truncated to 100 KiB', (i) => truncateSync(i.dataFile, 100 * 1024)],
    ['truncated to half', (i) => truncateSync(i.dataFile, Math.floor(Number(spawnSync('stat', ['-c', '%s', i.dataFile], { encoding: 'utf8' }).stdout) / 2))],
    ['header magic', (i) => poke(i.dataFile, 0, Buffer.from('XFI\xfb', 'latin1'))],
    ['L1 table offset past the end', (i) => poke(i.dataFile, 40, u64(0x7f0000000000n))],
    ['L1 table offset unaligned', (i) => poke(i.dataFile, 40, u64(0x30001n))],
    ['refcount table offset past the end', (i) => poke(i.dataFile, 48, u64(0x7f0000000000n))],
    ['refcount table offset 0', (i) => poke(i.dataFile, 48, u64(0n))],
    [
      'L2 entry pointing past the end',
      (i) => {
        const l1 = peek(i.dataFile, 40, 8).readBigUInt64BE();
        const l2 = peek(i.dataFile, Number(l1), 8).readBigUInt64BE() & 0x00fffffffffffe00n;
        poke(i.dataFile, Number(l2), u64(0x8000000000000000n | 0x7f0000000000n));
      },
    ],
  ];
  it.each(cases)('%s: every modifying command refuses, nothing changes', async (name, corrupt) => {
    const image = fresh('qcow2');
    corrupt(image);
    const failures = await refuses(`qcow2 ${name}`, dirname(image.dataFile), modifying(image.hdd), 'qcow2');
    expect(failures).toEqual([]);
  });
  infoCases('qcow2', cases);
});

/** The first BAT entries that map a cluster (the BAT follows the 64-byte header, u32 little-endian). */
function allocatedBat(path: string, count: number): number[] {
  const bat = peek(path, 64, 4 * 512);
  const out: number[] = [];
  for (let i = 0; i < 512 && out.length < count; i++) if (bat.readUInt32LE(4 * i) !== 0) out.push(i);
  return out;
}

describe('corrupt ploop', () => {
  const le32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const cases: [string, (image: BuiltImage) => void][] = [
    ['signature', (i) => poke(i.dataFile, 0, Buffer.from('WithoutFreeSpacX', 'latin1'))],
    ['cluster size 0', (i) => poke(i.dataFile, 28, le32(0))],
    ['cluster size not a power of two', (i) => poke(i.dataFile, 28, le32(3000))],
    ['BAT entry out of range', (i) => poke(i.dataFile, 64 + 4 * allocatedBat(i.dataFile, 1)[0]!, le32(0x0fffffff))],
    [
      'duplicate BAT entries',
      (i) => {
        const [a, b] = allocatedBat(i.dataFile, 2);
        poke(i.dataFile, 64 + 4 * b!, peek(i.dataFile, 64 + 4 * a!, 4));
      },
    ],
    ['truncated delta', (i) => truncateSync(i.dataFile, 4096)],
  ];
  it.each(cases)('%s: every modifying command refuses, nothing changes', async (name, corrupt) => {
    const image = fresh('ploop');
    corrupt(image);
    const failures = await refuses(`ploop ${name}`, image.hdd, modifying(image.hdd), 'ploop');
    expect(failures).toEqual([]);
  });
  infoCases('ploop', cases);
});

describe('broken partition tables and filesystems', () => {
  const SIZE = 256 * 1024 * 1024;
  it('GPT with a bad CRC in both headers', async () => {
    const image = fresh('qcow2');
    pokeGuest(image, 512 + 16, Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    pokeGuest(image, SIZE - 512 + 16, Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    const failures = await refuses('GPT bad CRC', dirname(image.dataFile), [
      ['resize', '--hdd', image.hdd, '--size', '384M'],
      ['resize', '--hdd', image.hdd, '--size', '384M', '--resize_partition'],
      ['resize', '--hdd', image.hdd, '--info'],
    ], 'qcow2');
    expect(failures).toEqual([]);
  });

  it('MBR with overlapping partitions', async () => {
    const image = fresh('qcow2-mbr');
    // Partition 2's start LBA (entry 2 at 446 + 16, field at +8) moved into partition 1 (2048..18431).
    const start = Buffer.alloc(4);
    start.writeUInt32LE(4096);
    pokeGuest(image, 446 + 16 + 8, start);
    const failures = await refuses('MBR overlapping partitions', dirname(image.dataFile), [
      ['resize', '--hdd', image.hdd, '--size', '384M', '--resize_partition'],
      ['resize', '--hdd', image.hdd, '--info'],
    ], 'qcow2');
    expect(failures).toEqual([]);
  });

  it('garbage where the filesystem was', async () => {
    const image = fresh('qcow2');
    // Partition 2 starts at sector 18432: its first 2 MiB (superblock, group descriptors) become random bytes.
    pokeGuest(image, 18432 * 512, Buffer.from(Array.from({ length: 2 * 1024 * 1024 }, (_, k) => (k * 2654435761) >>> 24)));
    // A shrink must refuse (the content cannot be measured); a grow is allowed by design (docs/resize.md): the
    // partition grows, the unknown content is left as it is, with a warning.
    const failures = await refuses('garbage filesystem', dirname(image.dataFile), [['resize', '--hdd', image.hdd, '--size', '200M', '--resize_partition']], 'qcow2');
    expect(failures).toEqual([]);
    const grow = await runCli(['resize', '--hdd', image.hdd, '--size', '384M', '--resize_partition']);
    expect(grow.code).toBe(0);
    expect(grow.stdout).toMatch(/does not recognise: the partition grows, its content is left as it is/);
  });
});

describe('hostile DiskDescriptor.xml', () => {
  const rewrite = (image: BuiltImage, edit: (xml: string) => string): void => {
    const path = join(image.hdd, 'DiskDescriptor.xml');
    writeFileSync(path, edit(readFileSync(path, 'utf8')));
  };
  const cases: [string, (image: BuiltImage) => void][] = [
    ['DOCTYPE with an external entity', (i) => rewrite(i, (x) => x.replace('<Parallels_disk_image', '<!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/hostname">]>\n<Parallels_disk_image').replace('<File>root.hds</File>', '<File>&e;</File>'))],
    ['DOCTYPE with an internal entity bomb', (i) => rewrite(i, (x) => x.replace('<Parallels_disk_image', '<!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n<Parallels_disk_image').replace('<Padding>0</Padding>', '<Padding>&c;</Padding>'))],
    [
      'File="../x.hds" outside the folder',
      (i) => {
        copyFileSync(i.dataFile, join(dirname(i.hdd), 'x.hds'));
        rewrite(i, (x) => x.replace('<File>root.hds</File>', '<File>../x.hds</File>'));
      },
    ],
    [
      'File with an absolute path outside the folder',
      (i) => {
        copyFileSync(i.dataFile, join(dirname(i.hdd), 'abs.hds'));
        rewrite(i, (x) => x.replace('<File>root.hds</File>', `<File>${join(dirname(i.hdd), 'abs.hds')}</File>`));
      },
    ],
    [
      'a cycle in the snapshots',
      (i) => {
        const other = '{11111111-2222-3333-4444-555555555555}';
        const top = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
        copyFileSync(i.dataFile, join(i.hdd, 'root.hds.other'));
        rewrite(i, (x) =>
          x
            .replace('</Image>', `</Image>\n      <Image>\n        <GUID>${other}</GUID>\n        <Type>Compressed</Type>\n        <File>root.hds.other</File>\n      </Image>`)
            .replace(/<ParentGUID>\{0+-0+-0+-0+-0+\}<\/ParentGUID>/, `<ParentGUID>${other}</ParentGUID>`)
            .replace('</Snapshots>', `  <Shot>\n      <GUID>${other}</GUID>\n      <ParentGUID>${top}</ParentGUID>\n    </Shot>\n  </Snapshots>`),
        );
      },
    ],
  ];
  it.each(cases)('%s: refused, nothing changes (outside files included)', async (name, hostile) => {
    const image = fresh('ploop');
    hostile(image);
    // The whole case folder: the files outside the ploop folder must not change either.
    const failures = await refuses(`descriptor: ${name}`, dirname(image.hdd), [...modifying(image.hdd), ['resize', '--hdd', image.hdd, '--info']], 'ploop', [3, 4, 7]);
    expect(failures).toEqual([]);
  });
});

describe('--hdd naming what is not an image', () => {
  let server: Server;
  let dir: string;
  beforeAll(async () => {
    dir = join(root, 'paths');
    mkdirSync(dir, { recursive: true });
    server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir, 'socket'), resolve));
    symlinkSync(join(dir, 'loop-b'), join(dir, 'loop-a'));
    symlinkSync(join(dir, 'loop-a'), join(dir, 'loop-b'));
    mkdirSync(join(dir, 'empty-folder'));
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it.each([
    ['a socket', () => join(dir, 'socket')],
    ['a device', () => '/dev/zero'],
    ['a symlink loop', () => join(dir, 'loop-a')],
    ['nothing', () => join(dir, 'missing.qcow2')],
    ['a folder without DiskDescriptor.xml', () => join(dir, 'empty-folder')],
  ])('%s: exit 3 for every command', async (name, path) => {
    const hdd = path();
    const failures = await refuses(`--hdd ${name}`, dir, [...modifying(hdd), ['resize', '--hdd', hdd, '--info'], ['compact', '--hdd', hdd, '--info']], '-', [3]);
    expect(failures).toEqual([]);
  });
});

describe('sizes out of range', () => {
  it.each([
    ['0', [2]],
    ['-5', [2]],
    ['1.5G', [2]],
    ['10X', [2]],
    ['99999999999999999999', [2]],
    ['99999999T', [2, 7, 8]],
    ['1', [8]],
  ] as [string, number[]][])('--size %s: a clear error, nothing changes', async (size, codes) => {
    const image = fresh('qcow2');
    const failures = await refuses(`--size ${size}`, dirname(image.dataFile), [['resize', '--hdd', image.hdd, '--size', size]], 'qcow2', codes);
    expect(failures).toEqual([]);
  });
});
