// The layering rules of docs/architecture.md, enforced on the source: each external tool is wrapped in one place,
// each on-disk format is written by its own module only, and imports point downward.
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const SRC = join(__dirname, '..', '..', 'src');

function sources(dir = SRC): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : name.endsWith('.ts') ? [path] : [];
  });
}

const files = sources().map((path) => ({ path: relative(SRC, path), text: readFileSync(path, 'utf8') }));

/** The ploop engine's writing primitives: a file that imports one writes ploop bytes. */
const PLOOP_WRITERS = ['writeData', 'writeEntry', 'encodeEntry', 'encodeHeader', 'markInUse', 'clearInUse', 'slotOffset', 'writeHeader'];

function importedNames(text: string): string[] {
  return [...text.matchAll(/import\s+(?:type\s+)?\{([^}]*)\}\s+from\s+'([^']+)'/g)].flatMap((m) =>
    m[1]!.split(',').map((n) => n.trim().replace(/^type\s+/, '').split(/\s+as\s+/)[0]!).filter(Boolean),
  );
}

describe('layering', () => {
  it('only util/exec spawns processes', () => {
    const offenders = files.filter((f) => f.path !== 'util/exec.ts' && /^import (?!type )[^;]*from '(node:)?child_process'/m.test(f.text)).map((f) => f.path);
    expect(offenders).toEqual([]);
  });

  it('only formats/qcow2 runs qemu-img and qemu-io', () => {
    const offenders = files.filter((f) => !f.path.startsWith('formats/qcow2/') && /['"]qemu-(img|io)['"]/.test(f.text)).map((f) => f.path);
    expect(offenders).toEqual([]);
  });

  it('only formats/ploop writes ploop bytes', () => {
    const offenders = files
      .filter((f) => !f.path.startsWith('formats/ploop/'))
      .filter((f) => importedNames(f.text).some((name) => PLOOP_WRITERS.includes(name)))
      .map((f) => f.path);
    expect(offenders).toEqual([]);
  });

  it('imports point downward: formats, partitions, guest, fs and util never import commands or cli', () => {
    const lower = files.filter((f) => /^(formats|partitions|guest|fs|util|plan)\//.test(f.path));
    const offenders = lower.filter((f) => /from '(\.\.\/)+(commands|cli)\//.test(f.text)).map((f) => f.path);
    expect(offenders).toEqual([]);
  });
});
