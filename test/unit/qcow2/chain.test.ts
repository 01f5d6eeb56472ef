// Where a backing file may lie (validateQcow2Chain): decided from the name before anything outside is looked at,
// on images made by qemu-img with backing names written natively (test/helpers/hostile-images.ts).
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { validateQcow2Chain } from '../../../src/formats/qcow2/chain.js';
import { parseConfig } from '../../../src/util/config.js';
import { patterned, qcow2, qcow2Backed } from '../../helpers/hostile-images.js';

const root = mkdtempSync(join(tmpdir(), 'qcow2-chain-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterEach(() => delete process.env.PRL_DISK_TOOL_CONFIG);

let counter = 0;
function folders(): { vm: string; out: string } {
  const dir = join(root, `c${++counter}`);
  mkdirSync(join(dir, 'vm'), { recursive: true });
  mkdirSync(join(dir, 'out'), { recursive: true });
  return { vm: join(dir, 'vm'), out: join(dir, 'out') };
}

function refusal(top: string): string {
  try {
    validateQcow2Chain(top);
  } catch (error) {
    return `${(error as { kind?: string }).kind}: ${(error as Error).message}`;
  }
  return 'accepted';
}

describe('validateQcow2Chain: backing files outside the folder', () => {
  it('accepts a raw backing file inside the folder', () => {
    const d = folders();
    patterned(join(d.vm, 'base.raw'), 1);
    const layers = validateQcow2Chain(qcow2Backed(join(d.vm, 'top.qcow2'), 'base.raw', 'raw'));
    expect(layers.map((l) => [l.format, l.insideFolder])).toEqual([['qcow2', true], ['raw', true]]);
  });

  it('refuses a raw backing file outside, named absolutely or relatively, or through an in-folder link', () => {
    const d = folders();
    patterned(join(d.out, 'victim.raw'), 1);
    expect(refusal(qcow2Backed(join(d.vm, 'a.qcow2'), join(d.out, 'victim.raw'), 'raw'))).toMatch(/^not-supported: .*raw file outside the image's folder/);
    expect(refusal(qcow2Backed(join(d.vm, 'b.qcow2'), '../out/victim.raw', 'raw'))).toMatch(/^not-supported: .*raw file outside/);
    expect(refusal(qcow2Backed(join(d.vm, 'c.qcow2'), '/etc/shadow', 'raw'))).toMatch(/^not-supported: .*raw file outside/);
    symlinkSync(join(d.out, 'victim.raw'), join(d.vm, 'link.raw'));
    expect(refusal(qcow2Backed(join(d.vm, 'd.qcow2'), 'link.raw', 'raw'))).toMatch(/^not-supported: .*symbolic link into another folder/);
  });

  it('refuses names under /dev, /proc, /sys and /run whatever their recorded format', () => {
    const d = folders();
    for (const [i, name] of ['/dev/sda', '/proc/self/fd/0', '/sys/kernel/notes', '/run/x.qcow2', '//dev/./sda'].entries()) {
      expect(refusal(qcow2Backed(join(d.vm, `t${i}.qcow2`), name, 'qcow2'))).toMatch(/^not-supported: .*lies under \/(dev|proc|sys|run),/);
    }
  });

  it('refuses ".." after a named component (a symlinked folder would take the kernel elsewhere)', () => {
    const d = folders();
    symlinkSync(d.out, join(d.vm, 'sub'));
    qcow2(join(d.vm, 'base.qcow2'));
    expect(refusal(qcow2Backed(join(d.vm, 'top.qcow2'), 'sub/../base.qcow2'))).toMatch(/^not-supported: .*with "\.\." inside the path/);
  });

  it('accepts a qcow2 outside by default, and only in a trusted folder when trusted_backing_dirs is set', () => {
    const d = folders();
    qcow2(join(d.out, 'template.qcow2'));
    const top = qcow2Backed(join(d.vm, 'top.qcow2'), join(d.out, 'template.qcow2'));
    expect(validateQcow2Chain(top).map((l) => l.insideFolder)).toEqual([true, false]);
    const config = join(d.vm, '..', 'prl-disk-tool.conf');
    process.env.PRL_DISK_TOOL_CONFIG = config;
    writeFileSync(config, `trusted_backing_dirs = /srv/templates:${d.out}\n`);
    expect(refusal(top)).toBe('accepted');
    writeFileSync(config, 'trusted_backing_dirs = /srv/templates\n');
    expect(refusal(top)).toMatch(/^refused: .*outside the folders the administrator trusts.*\/srv\/templates\)/);
    writeFileSync(config, 'trusted_backing_dirs =\n');
    expect(refusal(top)).toMatch(/^refused: .*trusts for templates \(.*: none\)/);
  });
});

describe('parseConfig', () => {
  it('reads trusted_backing_dirs, comments and blanks', () => {
    expect(parseConfig('# comment\n\ntrusted_backing_dirs = /a/b:/c/ # templates\n', 'f')).toEqual({ trustedBackingDirs: ['/a/b', '/c'] });
    expect(parseConfig('', 'f')).toEqual({});
  });

  it('refuses unknown keys, relative folders, a key set twice and lines that are no setting', () => {
    expect(() => parseConfig('trusted_backing_dir = /a', 'f')).toThrow(/unknown setting "trusted_backing_dir"/);
    expect(() => parseConfig('trusted_backing_dirs = a/b', 'f')).toThrow(/"a\/b" is not an absolute path/);
    expect(() => parseConfig('trusted_backing_dirs = /a\ntrusted_backing_dirs = /b', 'f')).toThrow(/line 2: "trusted_backing_dirs" is set twice/);
    expect(() => parseConfig('/a:/b', 'f')).toThrow(/expected "key = value"/);
  });
});
