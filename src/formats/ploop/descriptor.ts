// DiskDescriptor.xml: parse into a typed model, resolve the delta chain, edit the parsed tree in
// place (unknown nodes kept, as QEMU's docs/interop/prl-xml.txt asks) and write it atomically, in its
// own encoding, unchanged bytes kept (descriptor-text.ts). Element names: prl-xml.txt and OpenVZ ploop
// lib/xml.c (Preallocated lives in Storage; an Image of Type "Plain" is a raw file, "Compressed" a delta).
import { closeSync, lstatSync, realpathSync, statSync } from 'node:fs';
import { readFully } from '../../util/file-io.js';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { DOMParser, type Document, type Element } from '@xmldom/xmldom';
import { ImageInvalid, NotSupported } from '../../util/errors.js';
import { removeStaleTemporaries, writeFileAtomic } from '../../util/atomic.js';
import { FileRefused, identityOf, openRegularFile } from '../../util/safe-file.js';
import { isValidClusterSectors } from './check.js';
import {
  type DescriptorText,
  type SourceMap,
  decodeDescriptor,
  encodeDescriptor,
  insertOrdered,
  mapSource,
  placeKnownElements,
  removeElement,
  serializeWithSource,
} from './descriptor-text.js';

export const DESCRIPTOR_NAME = 'DiskDescriptor.xml';
/** prl-xml.txt: the top snapshot's GUID when TopGUID is absent. */
export const PREDEFINED_TOP_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
export const ROOT_PARENT_GUID = '{00000000-0000-0000-0000-000000000000}';
const MAX_DESCRIPTOR_BYTES = 1024 * 1024;
/** ploop writes five levels and about ten elements per snapshot: these bounds leave room for thousands of them. */
const MAX_ELEMENTS = 50_000;
const MAX_DEPTH = 16;
const GUID_PATTERN = /^\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}$/;

export type ImageType = 'Compressed' | 'Plain';

export interface ChainLink {
  guid: string;
  /** Absolute path of the delta, checked to lie inside the folder. */
  file: string;
  /** As written in the descriptor. */
  fileText: string;
  type: ImageType;
  parentGuid: string;
  /** The Shot carries <Temporary/> (ploop's temporary snapshot). */
  temporary: boolean;
}

export interface PloopDescriptor {
  /** Absolute path of DiskDescriptor.xml. */
  path: string;
  folder: string;
  diskSizeSectors: number;
  blockSizeSectors: number;
  /** Storage/Preallocated = 1: an expanding delta with every cluster allocated. */
  preallocated: boolean;
  /** The deltas from the top (the one written to) down to the base. */
  chain: ChainLink[];
  /** The parsed tree; edits go here so that unknown nodes survive. */
  document: Document;
  /** The file's encoding and text, so that a write changes only the bytes of what was edited. */
  text: Omit<DescriptorText, 'text'> & { source: SourceMap | undefined };
  /** The identity of the file it was read from (identityOf): a write replaces the name only while it still holds it. */
  identity?: string;
}

function invalid(path: string, finding: string): ImageInvalid {
  return new ImageInvalid(`The disk descriptor "${path}" is invalid`, [finding]);
}

function childElements(parent: Element, name: string): Element[] {
  const out: Element[] = [];
  for (let node = parent.firstChild; node !== null; node = node.nextSibling) {
    if (node.nodeType === 1 && (node as Element).nodeName === name) out.push(node as Element);
  }
  return out;
}

function child(parent: Element, name: string): Element | undefined {
  return childElements(parent, name)[0];
}

/**
 * The one child `name` of `parent`: two of them are refused, since a reader that takes the first (this tool once)
 * and one that takes the last or both (ploop's lib/xml.c) would see two different images.
 */
function only(parent: Element, name: string, path: string): Element | undefined {
  const found = childElements(parent, name);
  if (found.length > 1) throw invalid(path, `${parent.nodeName} has ${found.length} ${name} elements; a descriptor has one, and which one counts is ambiguous`);
  return found[0];
}

/**
 * Counts elements and nesting with one linear scan before any tree is built: a hostile descriptor of 120,000 nested
 * elements would otherwise cost seconds and hundreds of MiB in the parser before any rule could refuse it.
 */
function boundMarkup(xml: string, path: string): void {
  let depth = 0;
  let elements = 0;
  for (const tag of xml.matchAll(/<(\/?)[A-Za-z_][^<>]*?(\/?)>/g)) {
    if (tag[1] === '/') {
      depth--;
      continue;
    }
    if (++elements > MAX_ELEMENTS) throw invalid(path, `it holds more than ${MAX_ELEMENTS} elements, far more than a descriptor needs`);
    if (tag[2] !== '/' && ++depth > MAX_DEPTH) throw invalid(path, `its elements nest more than ${MAX_DEPTH} deep, far more than a descriptor needs`);
  }
}

function text(element: Element | undefined): string | undefined {
  return element?.textContent?.trim();
}

/** Resolves an image file name against the folder; refuses anything that leaves it. */
export function resolveInsideFolder(folder: string, fileText: string, descriptorPath: string): string {
  if (fileText.length === 0 || fileText.includes('\0')) throw invalid(descriptorPath, 'an Image has an empty or malformed File');
  if (fileText.split(/[\\/]/).includes('..')) {
    throw invalid(descriptorPath, `the image file "${fileText}" uses "..", which may leave the image folder`);
  }
  const absolute = isAbsolute(fileText) ? resolve(fileText) : resolve(folder, fileText);
  const rel = relative(resolve(folder), absolute);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw invalid(descriptorPath, `the image file "${fileText}" is outside the image folder ${folder}`);
  }
  return absolute;
}

function parseNumber(value: string | undefined, what: string, path: string): number {
  if (value === undefined || !/^[0-9]{1,16}$/.test(value)) throw invalid(path, `${what} is missing or not a whole number`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw invalid(path, `${what} is too large`);
  return n;
}

/** Parses the descriptor text; `path` is where it lives (image files resolve against its folder). */
export function parseDescriptor(xml: string, path: string, encoding: Omit<DescriptorText, 'text'> = { encoding: 'utf8', bom: false }): PloopDescriptor {
  path = resolve(path);
  const folder = dirname(path);
  // Entities and DTDs are refused outright: no expansion bombs, no external fetches.
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw invalid(path, 'it declares a DOCTYPE or entities, which a disk descriptor never needs');
  boundMarkup(xml, path);
  let document: Document;
  try {
    document = new DOMParser({
      onError: (level: string, message: string) => {
        if (level !== 'warning') throw new Error(message);
      },
    }).parseFromString(xml, 'text/xml');
  } catch (error) {
    throw invalid(path, `it is not well-formed XML (${error instanceof Error ? error.message.split('\n')[0] : String(error)})`);
  }
  if (document.doctype !== null) throw invalid(path, 'it declares a DOCTYPE');
  const root = document.documentElement;
  if (!root || (root.nodeName !== 'Parallels_disk_image' && root.nodeName !== 'Virtuozzo_disk_image')) {
    throw invalid(path, `the root element is ${root?.nodeName ?? 'missing'}, not Parallels_disk_image or Virtuozzo_disk_image`);
  }

  const params = only(root, 'Disk_Parameters', path);
  if (!params) throw invalid(path, 'Disk_Parameters is missing');
  const diskSizeSectors = parseNumber(text(only(params, 'Disk_size', path)), 'Disk_size', path);
  const padding = text(child(params, 'Padding'));
  if (padding !== undefined && padding !== '0') throw new NotSupported(`The disk descriptor "${path}" uses Padding ${padding}, which this tool does not support.`);
  const encryption = child(params, 'Encryption');
  if (encryption && text(child(encryption, 'KeyId'))) {
    throw new NotSupported(`The ploop image "${folder}" is encrypted, which this tool does not support.`);
  }

  const storageData = only(root, 'StorageData', path);
  const storages = storageData ? childElements(storageData, 'Storage') : [];
  if (storages.length === 0) throw invalid(path, 'StorageData/Storage is missing');
  if (storages.length > 1) throw new NotSupported(`The ploop image "${folder}" is split over several storages, which this tool does not support.`);
  const storage = storages[0]!;
  const blockSizeSectors = parseNumber(text(only(storage, 'Blocksize', path)) ?? '2048', 'Blocksize', path);
  if (!isValidClusterSectors(blockSizeSectors)) throw invalid(path, `Blocksize ${blockSizeSectors} is not a power of two from 64 to 131072 sectors`);
  const preallocatedText = text(only(storage, 'Preallocated', path));
  if (preallocatedText !== undefined && preallocatedText !== '0' && preallocatedText !== '1') throw invalid(path, 'Preallocated is neither 0 nor 1');
  const preallocated = preallocatedText === '1';

  const images = new Map<string, { file: string; fileText: string; type: ImageType }>();
  const files = new Map<string, string>();
  for (const image of childElements(storage, 'Image')) {
    const guid = text(only(image, 'GUID', path));
    if (guid === undefined || !GUID_PATTERN.test(guid)) throw invalid(path, `an Image has a missing or malformed GUID "${guid ?? ''}"`);
    if (images.has(guid.toLowerCase())) throw invalid(path, `the image GUID ${guid} appears twice`);
    const typeText = text(only(image, 'Type', path)) ?? 'Compressed';
    if (typeText !== 'Compressed' && typeText !== 'Plain') throw invalid(path, `image ${guid} has Type "${typeText}", not Compressed or Plain`);
    const fileText = only(image, 'File', path)?.textContent ?? undefined;
    if (fileText === undefined) throw invalid(path, `image ${guid} has no File`);
    // ploop takes the name as written: spaces or line breaks around it are part of it for ploop, not for a reader that trims.
    if (fileText !== fileText.trim()) throw invalid(path, `the File of image ${guid} has white space around its name ${JSON.stringify(fileText)}, which readers take differently`);
    const file = resolveInsideFolder(folder, fileText, path);
    const named = files.get(file);
    if (named !== undefined) throw invalid(path, `the images ${named} and ${guid} name the same file "${fileText}"; a layer can be in a chain once only`);
    files.set(file, guid);
    images.set(guid.toLowerCase(), { file, fileText, type: typeText });
  }
  if (images.size === 0) throw invalid(path, 'StorageData/Storage has no Image');

  const snapshots = only(root, 'Snapshots', path);
  if (!snapshots) throw invalid(path, 'Snapshots is missing');
  const parents = new Map<string, string>();
  const temporary = new Set<string>();
  for (const shot of childElements(snapshots, 'Shot')) {
    const guid = text(only(shot, 'GUID', path));
    const parent = text(only(shot, 'ParentGUID', path));
    if (guid === undefined || !GUID_PATTERN.test(guid)) throw invalid(path, 'a Shot has a missing or malformed GUID');
    if (parent === undefined || !GUID_PATTERN.test(parent)) throw invalid(path, `Shot ${guid} has a missing or malformed ParentGUID`);
    if (parents.has(guid.toLowerCase())) throw invalid(path, `Shot ${guid} appears twice`);
    parents.set(guid.toLowerCase(), parent.toLowerCase());
    if (child(shot, 'Temporary')) temporary.add(guid.toLowerCase());
  }
  let top = text(only(snapshots, 'TopGUID', path))?.toLowerCase();
  if (top === undefined) {
    if (!parents.has(PREDEFINED_TOP_GUID)) throw invalid(path, 'Snapshots has no TopGUID and no Shot with the predefined top GUID');
    top = PREDEFINED_TOP_GUID;
  }

  const chain: ChainLink[] = [];
  const visited = new Set<string>();
  for (let guid = top; guid !== ROOT_PARENT_GUID; ) {
    if (visited.has(guid)) throw invalid(path, `the snapshot chain loops back to ${guid}`);
    visited.add(guid);
    const image = images.get(guid);
    if (!image) throw invalid(path, `the snapshot ${guid} has no Image in StorageData`);
    const parentGuid = parents.get(guid);
    if (parentGuid === undefined) throw invalid(path, `the image ${guid} has no Shot in Snapshots`);
    chain.push({ guid, parentGuid, temporary: temporary.has(guid), ...image });
    guid = parentGuid;
  }
  for (const link of chain.slice(0, -1)) {
    if (link.type === 'Plain') throw invalid(path, `the overlay ${link.guid} has Type Plain; only a base image may be raw`);
  }
  return { path, folder, diskSizeSectors, blockSizeSectors, preallocated, chain, document, text: { ...encoding, source: mapSource(xml, document) } };
}

/**
 * What ploop itself refuses or this tool does not handle, as one sentence each (exit 7). Called by
 * readDescriptor, so that it comes before any qemu-img probe of the image.
 */
export function refuseUnsupported(descriptor: PloopDescriptor): void {
  const top = descriptor.chain[0]!;
  if (top.temporary) {
    throw new NotSupported(
      `The top snapshot ${top.guid} of the ploop image "${descriptor.folder}" is marked <Temporary/>, which ploop itself refuses to open (ploop makes such snapshots for a backup and merges them away); merge or delete it with ploop first.`,
    );
  }
  if (descriptor.chain.some((link) => link.type === 'Plain')) {
    throw new NotSupported(`The ploop image "${descriptor.folder}" is a raw image (Type Plain), which this tool does not support.`);
  }
}

/** Reads DiskDescriptor.xml from a folder (or a file inside it) and checks symlinks do not leave the folder. */
export function readDescriptor(folderOrFile: string): PloopDescriptor {
  let path = resolve(folderOrFile);
  if (statSync(path).isDirectory()) path = join(path, DESCRIPTOR_NAME);
  else if (!path.endsWith(sep + DESCRIPTOR_NAME)) path = join(dirname(path), DESCRIPTOR_NAME);
  // Opened once, no link followed, no FIFO waited on; read through that descriptor, its identity kept for the write.
  let opened;
  try {
    opened = openRegularFile(path);
  } catch (error) {
    if (error instanceof FileRefused) throw new NotSupported(`The disk descriptor "${path}" is refused: ${error.detail}; it must be a regular file in the image's folder. Nothing was changed.`);
    throw error;
  }
  let bytes: Buffer;
  try {
    const size = opened.stats.size;
    if (size > MAX_DESCRIPTOR_BYTES) throw invalid(path, `it is ${size} bytes, far more than a descriptor needs`);
    bytes = readFully(opened.fd, size, 0);
  } finally {
    closeSync(opened.fd);
  }
  const decoded = decodeDescriptor(bytes, path);
  const descriptor = parseDescriptor(decoded.text, path, { encoding: decoded.encoding, bom: decoded.bom });
  descriptor.identity = identityOf(opened.stats);
  refuseUnsupported(descriptor);
  const realFolder = realpathSync(descriptor.folder);
  for (const link of descriptor.chain) link.file = walkInsideFolder(realFolder, link.file, link.fileText, path);
  return descriptor;
}

/**
 * The delta's path inside the (real) folder, checked component by component with lstat from the folder down, so
 * that nothing outside the folder is ever looked at: a symbolic link anywhere on the way is refused unfollowed
 * (one leading out would make us touch another file; one to another delta would name a layer twice).
 */
function walkInsideFolder(realFolder: string, file: string, fileText: string, descriptorPath: string): string {
  const parts = relative(realFolder, resolve(realFolder, relative(dirname(descriptorPath), file))).split(sep);
  let at = realFolder;
  for (const part of parts) {
    at = join(at, part);
    let stats;
    try {
      stats = lstatSync(at);
    } catch {
      throw invalid(descriptorPath, `the image file "${fileText}" does not exist`);
    }
    if (stats.isSymbolicLink()) {
      throw invalid(descriptorPath, `the image file "${fileText}" is a symbolic link (a link that leads outside the image folder, or to another of its files, is never followed); a delta must be a regular file of the folder`);
    }
  }
  return at;
}

/** Sets a child's text; a missing child is inserted where ploop writes it (descriptor-text.ts PLOOP_ORDER). */
function setChildText(document: Document, parent: Element, name: string, value: string): void {
  let element = child(parent, name);
  if (!element) {
    element = document.createElement(name);
    insertOrdered(parent, element);
  }
  if (element.firstChild?.nodeType === 3 && element.firstChild === element.lastChild && element.textContent === value) return;
  while (element.firstChild) element.removeChild(element.firstChild);
  element.appendChild(document.createTextNode(value));
}

/** New virtual size: Disk_size, Storage End and Cylinders (Heads × Sectors × Cylinders ≈ Disk_size). */
export function setDiskSize(descriptor: PloopDescriptor, sizeSectors: number): void {
  const root = descriptor.document.documentElement!;
  const params = child(root, 'Disk_Parameters')!;
  setChildText(descriptor.document, params, 'Disk_size', String(sizeSectors));
  const heads = Number(text(child(params, 'Heads')) ?? '16') || 16;
  const sectors = Number(text(child(params, 'Sectors')) ?? '32') || 32;
  if (child(params, 'Cylinders')) setChildText(descriptor.document, params, 'Cylinders', String(Math.floor(sizeSectors / (heads * sectors))));
  const storage = child(child(root, 'StorageData')!, 'Storage')!;
  setChildText(descriptor.document, storage, 'End', String(sizeSectors));
  descriptor.diskSizeSectors = sizeSectors;
}

export function setPreallocated(descriptor: PloopDescriptor, preallocated: boolean): void {
  const root = descriptor.document.documentElement!;
  const storage = child(child(root, 'StorageData')!, 'Storage')!;
  const existing = child(storage, 'Preallocated');
  if (preallocated) setChildText(descriptor.document, storage, 'Preallocated', '1');
  else if (existing) removeElement(existing);
  descriptor.preallocated = preallocated;
}

export function serializeDescriptor(descriptor: PloopDescriptor): string {
  return serializeWithSource(descriptor.document, descriptor.text.source);
}

/**
 * Temporary file, fsync, rename, fsync of the folder. Writers hold the image's exclusive lock, so a temporary
 * of an earlier write still beside the descriptor is what a killed run left: it goes first.
 */
export function writeDescriptor(descriptor: PloopDescriptor): void {
  removeStaleTemporaries(descriptor.path, 'write');
  placeKnownElements(descriptor.document);
  const { encoding, bom } = descriptor.text;
  descriptor.identity = writeFileAtomic(descriptor.path, encodeDescriptor(serializeDescriptor(descriptor), encoding, bom), 0o644, descriptor.identity);
}
