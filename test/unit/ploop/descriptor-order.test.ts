// DiskDescriptor.xml as ploop reads it: inserted elements where ploop's lib/xml.c writes them (its reader takes
// everything after the first <Image> as another Image), the file's encoding and untouched bytes kept, and the
// descriptors ploop refuses (a <Temporary/> top) or this tool does not handle (Type Plain) refused with exit 7.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ImageInvalid, NotSupported } from '../../../src/util/errors.js';
import { parseDescriptor, readDescriptor, serializeDescriptor, setDiskSize, setPreallocated, writeDescriptor } from '../../../src/formats/ploop/descriptor.js';
import { BASE_GUID, ROOT_PARENT, TOP_GUID, descriptorXml, removeDir, tempDir } from './fixtures.js';

const one = (extra: Partial<Parameters<typeof descriptorXml>[0]> = {}): string =>
  descriptorXml({ sizeSectors: 2048, blockSizeSectors: 2048, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }], ...extra });

/** Element names in the order they stand inside `parent` (a plain scan; the test needs no XML parser). */
function childOrder(xml: string, parent: string): string[] {
  const body = new RegExp(`<${parent}>([\\s\\S]*?)</${parent}>`).exec(xml)![1]!;
  const names: string[] = [];
  let depth = 0;
  for (const m of body.matchAll(/<(\/?)([A-Za-z_]+)[^>]*?(\/?)>/g)) {
    if (m[1] === '/') depth--;
    else {
      if (depth === 0) names.push(m[2]!);
      if (m[3] !== '/') depth++;
    }
  }
  return names;
}

let dir: string;
let n = 0;
beforeAll(() => {
  dir = tempDir('ploop-order-');
});
afterAll(() => removeDir(dir));

function folderWith(bytes: string | Buffer, files = ['root.hds']): string {
  const folder = join(dir, `img${++n}`);
  mkdirSync(folder);
  writeFileSync(join(folder, 'DiskDescriptor.xml'), bytes);
  for (const file of files) writeFileSync(join(folder, file), '');
  return folder;
}

describe('element order', () => {
  test('Preallocated goes after Blocksize and before the first Image, indented like its neighbours', () => {
    const d = parseDescriptor(one(), '/ct/DiskDescriptor.xml');
    setPreallocated(d, true);
    const xml = serializeDescriptor(d);
    expect(childOrder(xml, 'Storage')).toEqual(['Start', 'End', 'Blocksize', 'Preallocated', 'Image']);
    expect(xml).toContain('      <Blocksize>2048</Blocksize>\n      <Preallocated>1</Preallocated>\n      <Image>');
    setPreallocated(d, false);
    expect(serializeDescriptor(d)).toBe(one());
  });

  test('a missing End is inserted after Start; without Start, before Blocksize', () => {
    const d = parseDescriptor(one().replace(/\s*<End>\d+<\/End>/, ''), '/ct/DiskDescriptor.xml');
    setDiskSize(d, 4096);
    expect(childOrder(serializeDescriptor(d), 'Storage')).toEqual(['Start', 'End', 'Blocksize', 'Image']);
    const noStart = parseDescriptor(one().replace(/\s*<End>\d+<\/End>/, '').replace(/\s*<Start>\d+<\/Start>/, ''), '/ct/DiskDescriptor.xml');
    setDiskSize(noStart, 4096);
    expect(childOrder(serializeDescriptor(noStart), 'Storage')).toEqual(['End', 'Blocksize', 'Image']);
  });

  test('a Preallocated an older writer appended after the Images is moved back before them', () => {
    const broken = one().replace('      </Image>\n', '      </Image>\n      <Preallocated>1</Preallocated>\n');
    const folder = folderWith(broken);
    const d = readDescriptor(folder);
    expect(d.preallocated).toBe(true);
    writeDescriptor(d);
    expect(childOrder(readFileSync(join(folder, 'DiskDescriptor.xml'), 'latin1'), 'Storage')).toEqual(['Start', 'End', 'Blocksize', 'Preallocated', 'Image']);
  });
});

describe('encoding and untouched bytes', () => {
  // Quirks XMLSerializer would rewrite: single quotes, character references, a comment, CDATA, no final newline.
  const latin1 = (size: number): Buffer =>
    Buffer.from(
      one({ sizeSectors: size, extra: "\n  <Comment lang='fr'>Donn\u00e9es &#233;t\u00e9 &amp; <![CDATA[<x>]]><!-- \u00e0 garder --></Comment>" })
        .replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
        .replace(/\n$/, ''),
      'latin1',
    );

  test('an ISO-8859-1 descriptor with non-ASCII text comes back byte-identical except the edited values', () => {
    const before = latin1(2048);
    const folder = folderWith(before);
    const d = readDescriptor(folder);
    setDiskSize(d, 4096);
    writeDescriptor(d);
    const after = readFileSync(join(folder, 'DiskDescriptor.xml'));
    const expected = Buffer.from(
      before
        .toString('latin1')
        .replace('<Disk_size>2048</Disk_size>', '<Disk_size>4096</Disk_size>')
        .replace('<End>2048</End>', '<End>4096</End>')
        .replace('<Cylinders>4</Cylinders>', '<Cylinders>8</Cylinders>'),
      'latin1',
    );
    expect(after.equals(expected)).toBe(true);
    expect(after.includes(Buffer.from([0xe9]))).toBe(true);
  });

  test('a write without edits changes no byte (UTF-8 with a byte-order mark too)', () => {
    const utf8 = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(one({ extra: "\n  <Note a='1'>caf\u00e9 \u2713</Note>" }), 'utf8')]);
    for (const bytes of [latin1(2048), utf8]) {
      const folder = folderWith(bytes);
      writeDescriptor(readDescriptor(folder));
      expect(readFileSync(join(folder, 'DiskDescriptor.xml')).equals(bytes)).toBe(true);
    }
  });

  test('invalid UTF-8 and encodings ploop does not write are named', () => {
    const bad = Buffer.from(one({ extra: '\n  <Note>caf\u00e9</Note>' }), 'latin1');
    expect(() => readDescriptor(folderWith(bad))).toThrow(ImageInvalid);
    expect(() => readDescriptor(folderWith(bad))).toThrow(/not valid UTF-8/);
    expect(() => readDescriptor(folderWith(one().replace('UTF-8', 'windows-1251')))).toThrow(/windows-1251/);
  });
});

describe('descriptors ploop refuses or this tool does not handle', () => {
  const chain = (temporaryOn: string): string =>
    descriptorXml({
      sizeSectors: 2048,
      blockSizeSectors: 2048,
      shots: [
        { guid: TOP_GUID, file: 'top.hds', parent: BASE_GUID },
        { guid: BASE_GUID, file: 'root.hds', parent: ROOT_PARENT },
      ],
    }).replace(`<GUID>${temporaryOn}</GUID>\n      <ParentGUID>`, `<GUID>${temporaryOn}</GUID>\n      <Temporary/>\n      <ParentGUID>`);

  test('a <Temporary/> top delta is refused with one sentence (exit 7); a temporary lower snapshot is fine', () => {
    const top = folderWith(chain(TOP_GUID), ['top.hds', 'root.hds']);
    expect(() => readDescriptor(top)).toThrow(NotSupported);
    expect(() => readDescriptor(top)).toThrow(/marked <Temporary\/>, which ploop itself refuses/);
    const lower = readDescriptor(folderWith(chain(BASE_GUID), ['top.hds', 'root.hds']));
    expect(lower.chain.map((l) => l.temporary)).toEqual([false, true]);
  });

  test('a raw (Type Plain) image is not supported', () => {
    const folder = folderWith(one().replace('<Type>Compressed</Type>', '<Type>Plain</Type>'));
    expect(() => readDescriptor(folder)).toThrow(NotSupported);
    expect(() => readDescriptor(folder)).toThrow(/raw image \(Type Plain\), which this tool does not support\.$/);
  });
});
