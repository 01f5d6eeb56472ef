// DiskDescriptor.xml: the typed model, the chain, hostile descriptors, edits that keep unknown nodes.
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ImageInvalid, NotSupported } from '../../../src/util/errors.js';
import {
  parseDescriptor,
  readDescriptor,
  serializeDescriptor,
  setDiskSize,
  setPreallocated,
  writeDescriptor,
} from '../../../src/formats/ploop/descriptor.js';
import { BASE_GUID, ROOT_PARENT, TOP_GUID, descriptorXml, removeDir, tempDir } from './fixtures.js';

const folder = '/srv/ct/101/root.hdd';
const path = join(folder, 'DiskDescriptor.xml');
const chainXml = descriptorXml({
  sizeSectors: 2097152,
  blockSizeSectors: 2048,
  shots: [
    { guid: TOP_GUID, file: `root.hds.${TOP_GUID}`, parent: BASE_GUID },
    { guid: BASE_GUID, file: 'root.hds', parent: ROOT_PARENT },
  ],
  extra: '\n  <Vendor_Specific keep="yes">opaque<Nested/></Vendor_Specific>',
});

function findingOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof ImageInvalid) return error.findings.join('; ');
    throw error;
  }
  throw new Error('expected ImageInvalid');
}

describe('parse', () => {
  test('the model: size, block size, the chain top first with absolute files', () => {
    const d = parseDescriptor(chainXml, path);
    expect(d.folder).toBe(folder);
    expect(d.diskSizeSectors).toBe(2097152);
    expect(d.blockSizeSectors).toBe(2048);
    expect(d.preallocated).toBe(false);
    expect(d.chain.map((l) => [l.guid, l.file, l.parentGuid])).toEqual([
      [TOP_GUID, join(folder, `root.hds.${TOP_GUID}`), BASE_GUID],
      [BASE_GUID, join(folder, 'root.hds'), ROOT_PARENT],
    ]);
  });

  test('Virtuozzo_disk_image root and Preallocated', () => {
    const xml = descriptorXml({ sizeSectors: 2048, blockSizeSectors: 2048, preallocated: true, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] }).replace(
      /Parallels_disk_image/g,
      'Virtuozzo_disk_image',
    );
    const d = parseDescriptor(xml, path);
    expect(d.preallocated).toBe(true);
    expect(d.chain).toHaveLength(1);
  });

  test('without TopGUID the predefined top GUID is used', () => {
    const xml = descriptorXml({ sizeSectors: 2048, blockSizeSectors: 2048, top: null, shots: [{ guid: TOP_GUID, file: 'root.hds', parent: ROOT_PARENT }] });
    expect(parseDescriptor(xml, path).chain[0]!.guid).toBe(TOP_GUID);
  });
});

const one = (file: string): string => descriptorXml({ sizeSectors: 2048, blockSizeSectors: 2048, shots: [{ guid: TOP_GUID, file, parent: ROOT_PARENT }] });

const hostile: [string, string, RegExp][] = [
  ['a DOCTYPE', '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Parallels_disk_image>&e;</Parallels_disk_image>', /DOCTYPE/],
  ['an entity bomb', one('root.hds').replace('<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0"?>\n<!ENTITY a "aaaa">'), /DOCTYPE or entities/],
  ['File="../x"', one('../x'), /uses ".."/],
  ['File with .. inside', one('sub/../../x'), /uses ".."/],
  ['an absolute path outside', one('/etc/passwd'), /outside the image folder/],
  ['the folder itself', one('.'), /outside the image folder/],
  ['garbage', 'not xml at all <<<', /well-formed|root element/],
  ['an unclosed element', '<Parallels_disk_image><Disk_Parameters>', /well-formed/],
  ['a wrong root', '<Other/>', /root element is Other/],
  ['no Disk_Parameters', '<Parallels_disk_image/>', /Disk_Parameters is missing/],
  ['a non-numeric Disk_size', one('root.hds').replace('<Disk_size>2048</Disk_size>', '<Disk_size>-5</Disk_size>'), /Disk_size/],
  ['a bad Blocksize', one('root.hds').replace('<Blocksize>2048</Blocksize>', '<Blocksize>100</Blocksize>'), /Blocksize/],
  ['missing TopGUID', descriptorXml({ sizeSectors: 2048, blockSizeSectors: 2048, top: null, shots: [{ guid: BASE_GUID, file: 'root.hds', parent: ROOT_PARENT }] }), /no TopGUID/],
  [
    'a cycle',
    descriptorXml({
      sizeSectors: 2048,
      blockSizeSectors: 2048,
      shots: [
        { guid: TOP_GUID, file: 'a.hds', parent: BASE_GUID },
        { guid: BASE_GUID, file: 'b.hds', parent: TOP_GUID },
      ],
    }),
    /loops back/,
  ],
  ['a TopGUID with no image', one('root.hds').replace(`<TopGUID>${TOP_GUID}</TopGUID>`, `<TopGUID>${BASE_GUID}</TopGUID>`), /has no Image/],
  ['a malformed GUID', one('root.hds').replace(`<GUID>${TOP_GUID}</GUID>`, '<GUID>nope</GUID>'), /GUID/],
  ['an unknown image Type', one('root.hds').replace('<Type>Compressed</Type>', '<Type>Weird</Type>'), /Type "Weird"/],
];

describe('hostile descriptors give one clear finding', () => {
  test.each(hostile)('%s', (_name, xml, expected) => {
    expect(findingOf(() => parseDescriptor(xml, path))).toMatch(expected);
  });

  test('Padding 1 and split storages are not supported', () => {
    expect(() => parseDescriptor(one('root.hds').replace('<Padding>0</Padding>', '<Padding>1</Padding>'), path)).toThrow(NotSupported);
    const split = one('root.hds').replace('</StorageData>', '<Storage><Blocksize>2048</Blocksize></Storage></StorageData>');
    expect(() => parseDescriptor(split, path)).toThrow(NotSupported);
  });
});

describe('files on disk', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir();
  });
  afterAll(() => removeDir(dir));

  test('a symlink that leaves the folder is refused', () => {
    const img = join(dir, 'img1');
    mkdirSync(img);
    symlinkSync('/etc/hostname', join(img, 'root.hds'));
    writeFileSync(join(img, 'DiskDescriptor.xml'), one('root.hds'));
    expect(findingOf(() => readDescriptor(img))).toMatch(/link that leads outside/);
  });

  test('a missing image file is named', () => {
    const img = join(dir, 'img2');
    mkdirSync(img);
    writeFileSync(join(img, 'DiskDescriptor.xml'), one('root.hds'));
    expect(findingOf(() => readDescriptor(img))).toMatch(/does not exist/);
  });

  test('edits keep unknown nodes and land atomically', () => {
    const img = join(dir, 'img3');
    mkdirSync(img);
    writeFileSync(join(img, 'DiskDescriptor.xml'), chainXml);
    writeFileSync(join(img, 'root.hds'), '');
    writeFileSync(join(img, `root.hds.${TOP_GUID}`), '');
    const d = readDescriptor(join(img, 'root.hds'));
    setDiskSize(d, 4194304);
    setPreallocated(d, true);
    writeDescriptor(d);
    const text = readFileSync(join(img, 'DiskDescriptor.xml'), 'utf8');
    expect(text).toContain('<Vendor_Specific keep="yes">opaque<Nested/></Vendor_Specific>');
    expect(text).toContain('<UID>{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}</UID>');
    expect(text).toContain('<Disk_size>4194304</Disk_size>');
    expect(text).toContain('<End>4194304</End>');
    expect(text).toContain('<Cylinders>8192</Cylinders>');
    expect(text).toContain('<Preallocated>1</Preallocated>');
    const again = readDescriptor(img);
    expect(again.diskSizeSectors).toBe(4194304);
    expect(again.preallocated).toBe(true);
    setPreallocated(again, false);
    expect(serializeDescriptor(again)).not.toContain('Preallocated');
  });
});
