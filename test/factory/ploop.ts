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
  /** The top delta. */
  deltaFile: string;
  /** Every delta, top first. */
  chain: string[];
  problems: string[];
}

/**
 * Reads a descriptor with plain pattern matching (the oracle needs no general XML parser) and checks the prl-xml
 * rules that a resize, convert or merge could break. A chain of snapshot deltas is followed from TopGUID through
 * each Shot's ParentGUID down to the base.
 */
export function readDescriptor(folder: string): DescriptorFacts {
  const path = join(folder, DESCRIPTOR);
  const xml = readFileSync(path, 'utf8');
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new Error(`${path} declares a DTD or entities`);
  const images = [...xml.matchAll(/<Image>([\s\S]*?)<\/Image>/g)].map((m) => ({
    guid: one(m[1]!, 'GUID', path).toLowerCase(),
    type: one(m[1]!, 'Type', path),
    file: one(m[1]!, 'File', path),
  }));
  const parents = new Map([...xml.matchAll(/<Shot>([\s\S]*?)<\/Shot>/g)].map((m) => [one(m[1]!, 'GUID', path).toLowerCase(), one(m[1]!, 'ParentGUID', path).toLowerCase()]));
  const diskSizeSectors = num(xml, 'Disk_size', path);
  const cylinders = num(xml, 'Cylinders', path);
  const heads = num(xml, 'Heads', path);
  const sectors = num(xml, 'Sectors', path);
  const start = num(xml, 'Start', path);
  const end = num(xml, 'End', path);
  const blocksizeSectors = num(xml, 'Blocksize', path);
  const prealloc = /<Preallocated>/.test(xml) ? num(xml, 'Preallocated', path) : 0;
  const problems: string[] = [];
  if (one(xml, 'Padding', path) !== '0') problems.push(`${path}: Padding is not 0`);
  if (cylinders * heads * sectors !== diskSizeSectors) {
    problems.push(`${path}: Cylinders*Heads*Sectors = ${cylinders * heads * sectors}, Disk_size = ${diskSizeSectors}`);
  }
  if (start !== 0 || end !== diskSizeSectors) problems.push(`${path}: Storage spans ${start}..${end}, Disk_size is ${diskSizeSectors}`);
  if (prealloc > 1) problems.push(`${path}: Preallocated is ${prealloc}`);
  const chain: string[] = [];
  for (let guid = one(xml, 'TopGUID', path).toLowerCase(); guid !== NONE_GUID; guid = parents.get(guid) ?? NONE_GUID) {
    const image = images.find((i) => i.guid === guid);
    if (image === undefined || chain.length === images.length) throw new Error(`${path}: the chain from TopGUID breaks or loops at ${guid}`);
    if (image.type !== 'Compressed') problems.push(`${path}: image ${guid} has Type "${image.type}", expected "Compressed"`);
    const file = resolve(folder, image.file);
    if (!file.startsWith(resolve(folder) + sep)) throw new Error(`${path}: image file "${image.file}" lies outside the folder`);
    chain.push(file);
  }
  if (chain.length !== images.length) problems.push(`${path}: ${images.length} images, ${chain.length} of them on the chain from TopGUID`);
  return { diskSizeSectors, start, end, blocksizeSectors, preallocated: prealloc === 1, imageType: images[0]?.type ?? '', deltaFile: chain[0]!, chain, problems };
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
