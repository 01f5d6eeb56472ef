// The factory's single-delta DiskDescriptor.xml (written by the tests' shared writer) and the oracle's reader,
// both independent of src/formats/ploop.
// Layout follows QEMU's docs/interop/prl-xml.txt and what the ploop library (lib/xml.c) writes: the top delta has the
// fixed GUID {5fbaabe3-...}; a preallocated expanding image is Type "Compressed" plus <Preallocated>1</Preallocated>
// in Storage ("Plain" means a raw image file to ploop, which the factory does not make).
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { ROOT_PARENT as NONE_GUID, TOP_GUID, descriptorXml as chainXml } from '../helpers/ploop.js';

export const DELTA_NAME = 'root.hds';
export const DESCRIPTOR = 'DiskDescriptor.xml';
export const CLUSTER_SECTORS = 2048;

export function descriptorXml(sizeSectors: number, preallocated: boolean): string {
  if (sizeSectors % 512 !== 0) throw new Error(`ploop size ${sizeSectors} sectors is not a whole number of cylinders`);
  return chainXml({ sizeSectors, blockSizeSectors: CLUSTER_SECTORS, preallocated, shots: [{ guid: TOP_GUID, file: DELTA_NAME, parent: NONE_GUID }] });
}

function one(xml: string, tag: string, where: string): string {
  const all = [...xml.matchAll(new RegExp(`<${tag}>\\s*([^<]*?)\\s*</${tag}>`, 'g'))];
  if (all.length !== 1) throw new Error(`${where}: expected one <${tag}>, found ${all.length}`);
  return all[0]![1]!;
}

function num(xml: string, tag: string, where: string): number {
  const text = one(xml, tag, where);
  if (!/^\d+$/.test(text)) throw new Error(`${where}: <${tag}> is "${text}", not a number`);
  return Number(text);
}

export interface DescriptorFacts {
  diskSizeSectors: number;
  start: number;
  end: number;
  blocksizeSectors: number;
  preallocated: boolean;
  imageType: string;
  deltaFile: string;
  problems: string[];
}

/**
 * Reads a single-image descriptor with plain pattern matching (the oracle needs no general XML parser) and checks
 * the prl-xml rules that a resize or convert could break.
 */
export function readDescriptor(folder: string): DescriptorFacts {
  const path = join(folder, DESCRIPTOR);
  const xml = readFileSync(path, 'utf8');
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new Error(`${path} declares a DTD or entities`);
  const images = [...xml.matchAll(/<Image>([\s\S]*?)<\/Image>/g)].map((m) => m[1]!);
  if (images.length !== 1) throw new Error(`${path}: the verifier handles one image, found ${images.length}`);
  const image = images[0]!;
  const diskSizeSectors = num(xml, 'Disk_size', path);
  const cylinders = num(xml, 'Cylinders', path);
  const heads = num(xml, 'Heads', path);
  const sectors = num(xml, 'Sectors', path);
  const start = num(xml, 'Start', path);
  const end = num(xml, 'End', path);
  const blocksizeSectors = num(xml, 'Blocksize', path);
  const prealloc = /<Preallocated>/.test(xml) ? num(xml, 'Preallocated', path) : 0;
  const imageType = one(image, 'Type', path);
  const file = one(image, 'File', path);
  const guid = one(image, 'GUID', path);
  const problems: string[] = [];
  if (one(xml, 'Padding', path) !== '0') problems.push(`${path}: Padding is not 0`);
  if (cylinders * heads * sectors !== diskSizeSectors) {
    problems.push(`${path}: Cylinders*Heads*Sectors = ${cylinders * heads * sectors}, Disk_size = ${diskSizeSectors}`);
  }
  if (start !== 0 || end !== diskSizeSectors) problems.push(`${path}: Storage spans ${start}..${end}, Disk_size is ${diskSizeSectors}`);
  if (imageType !== 'Compressed') problems.push(`${path}: image Type is "${imageType}", expected "Compressed"`);
  if (prealloc > 1) problems.push(`${path}: Preallocated is ${prealloc}`);
  const topGuid = one(xml, 'TopGUID', path);
  if (guid.toLowerCase() !== topGuid.toLowerCase()) problems.push(`${path}: image GUID ${guid} is not TopGUID ${topGuid}`);
  const deltaFile = resolve(folder, file);
  if (!deltaFile.startsWith(resolve(folder) + sep)) throw new Error(`${path}: image file "${file}" lies outside the folder`);
  return { diskSizeSectors, start, end, blocksizeSectors, preallocated: prealloc === 1, imageType, deltaFile, problems };
}

/** The cluster size recorded in a Parallels delta header ("tracks", offset 28, docs/interop/parallels.txt). */
export async function deltaClusterSectors(deltaFile: string): Promise<number> {
  const fd = await open(deltaFile, 'r');
  try {
    const header = Buffer.alloc(64);
    await fd.read(header, 0, 64, 0);
    const magic = header.subarray(0, 16).toString('latin1');
    if (magic !== 'WithouFreSpacExt' && magic !== 'WithoutFreeSpace') throw new Error(`${deltaFile}: bad magic ${JSON.stringify(magic)}`);
    return header.readUInt32LE(28);
  } finally {
    await fd.close();
  }
}
