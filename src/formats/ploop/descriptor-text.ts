// DiskDescriptor.xml as bytes: the file's encoding kept, and edits written back as splices of the original
// text, so that every node we do not change comes back byte for byte (attribute quotes, character
// references, comments, whitespace). Element order follows what ploop's lib/xml.c writes, because its
// reader takes every element after the first <Image> (or <Shot>, or <Storage>) as another one of those.
import type { Document, Element, Node } from '@xmldom/xmldom';
import { XMLSerializer } from '@xmldom/xmldom';
import { ImageInvalid, NotSupported } from '../../util/errors.js';

export type DescriptorEncoding = 'utf8' | 'latin1';

export interface DescriptorText {
  /** The decoded text, without a byte-order mark. */
  text: string;
  encoding: DescriptorEncoding;
  bom: boolean;
}

/**
 * Where ploop_store_diskdescriptor puts each element (lib/xml.c, ploop 1.x and 7.x); unknown children keep
 * their places. Every list ends with the element that repeats and must come last.
 */
export const PLOOP_ORDER: Readonly<Record<string, readonly string[]>> = {
  Disk_Parameters: ['Disk_size', 'Max_delta_size', 'Cylinders', 'Heads', 'Sectors', 'Padding', 'Encryption'],
  StorageData: ['Volume', 'Storage'],
  Storage: ['Start', 'End', 'Blocksize', 'Preallocated', 'Image'],
  Snapshots: ['TopGUID', 'Shot'],
  Shot: ['GUID', 'ParentGUID', 'Temporary'],
  Image: ['GUID', 'Type', 'File'],
};

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** Decodes the file as its XML declaration says: UTF-8 (the default, what ploop writes) or ISO-8859-1. */
export function decodeDescriptor(bytes: Buffer, path: string): DescriptorText {
  if ((bytes[0] === 0xfe && bytes[1] === 0xff) || (bytes[0] === 0xff && bytes[1] === 0xfe)) {
    throw new NotSupported(`The disk descriptor "${path}" is encoded in UTF-16, which ploop does not write and this tool does not edit; convert it to UTF-8 with iconv first.`);
  }
  const bom = bytes.subarray(0, 3).equals(UTF8_BOM);
  const body = bom ? bytes.subarray(3) : bytes;
  const declared = /^<\?xml\s[^?>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']/.exec(body.subarray(0, 256).toString('latin1'))?.[1]?.toLowerCase();
  let encoding: DescriptorEncoding;
  if (declared === undefined || declared === 'utf-8' || declared === 'utf8') encoding = 'utf8';
  else if (['iso-8859-1', 'iso8859-1', 'iso_8859-1', 'latin1', 'l1', 'us-ascii', 'ascii'].includes(declared)) encoding = 'latin1';
  else {
    throw new NotSupported(`The disk descriptor "${path}" is encoded in ${declared}; this tool edits only UTF-8 and ISO-8859-1 descriptors (what ploop writes), so convert it with iconv first.`);
  }
  if (encoding === 'latin1') return { text: body.toString('latin1'), encoding, bom };
  try {
    return { text: new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body), encoding, bom };
  } catch {
    throw new ImageInvalid(`The disk descriptor "${path}" is invalid`, ['it is not valid UTF-8 and declares no other encoding (an ISO-8859-1 file must say encoding="ISO-8859-1")']);
  }
}

export function encodeDescriptor(text: string, encoding: DescriptorEncoding, bom: boolean): Buffer {
  // Only our own inserted text can hold a character ISO-8859-1 lacks; a character reference keeps it.
  const safe = encoding === 'latin1' ? text.replace(/[^\u0000-\u00ff]/gu, (c) => `&#${c.codePointAt(0)};`) : text;
  const body = Buffer.from(safe, encoding);
  return bom ? Buffer.concat([UTF8_BOM, body]) : body;
}

interface Origin {
  start: number;
  /** End of the start tag (elements), else `end`. */
  startTagEnd: number;
  /** Start of the end tag; equals `end` for a self-closing element. */
  endTagStart: number;
  end: number;
  /** The node as XMLSerializer writes it at parse time: unchanged nodes compare equal. */
  fingerprint: string;
  /** The same for the element alone (name and attributes), to keep its tags' bytes when only children changed. */
  tag: string;
}

export interface SourceMap {
  text: string;
  /** Bytes before the root element and after it: never ours to change. */
  prefixEnd: number;
  suffixStart: number;
  origins: WeakMap<Node, Origin>;
}

interface Token {
  kind: 'start' | 'end' | 'empty' | 'text' | 'other';
  name: string;
  start: number;
  end: number;
}

/** Splits well-formed XML (xmldom has already accepted it) into markup and text runs. */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let at = 0;
  const until = (from: number, close: string): number => {
    const found = text.indexOf(close, from);
    if (found < 0) throw new Error(`unterminated markup at ${from}`);
    return found + close.length;
  };
  while (at < text.length) {
    if (text[at] !== '<') {
      const next = text.indexOf('<', at);
      const end = next < 0 ? text.length : next;
      tokens.push({ kind: 'text', name: '', start: at, end });
      at = end;
    } else if (text.startsWith('<!--', at)) {
      tokens.push({ kind: 'other', name: '#comment', start: at, end: (at = until(at + 4, '-->')) });
    } else if (text.startsWith('<![CDATA[', at)) {
      tokens.push({ kind: 'other', name: '#cdata-section', start: at, end: (at = until(at + 9, ']]>')) });
    } else if (text.startsWith('<?', at)) {
      tokens.push({ kind: 'other', name: '#pi', start: at, end: (at = until(at + 2, '?>')) });
    } else {
      // A tag: '>' may stand inside a quoted attribute value.
      let end = at + 1;
      let quote = '';
      for (; end < text.length; end++) {
        const c = text[end]!;
        if (quote) {
          if (c === quote) quote = '';
        } else if (c === '"' || c === "'") quote = c;
        else if (c === '>') break;
      }
      if (end >= text.length) throw new Error(`unterminated tag at ${at}`);
      const closing = text[at + 1] === '/';
      const name = /^<\/?([^\s/>]+)/.exec(text.slice(at, end + 1))?.[1] ?? '';
      const kind = closing ? 'end' : text[end - 1] === '/' ? 'empty' : 'start';
      tokens.push({ kind, name, start: at, end: end + 1 });
      at = end + 1;
    }
  }
  return tokens;
}

const MAX_MAPPED_DEPTH = 32;
const serializer = new XMLSerializer();
function fingerprint(node: Node): string {
  return serializer.serializeToString(node);
}
function tagPrint(node: Node): string {
  return node.nodeType === 1 ? fingerprint(node.cloneNode(false)) : '';
}

/** Pairs the parsed tree with the text it came from; undefined when they do not line up (then edits re-serialize). */
export function mapSource(text: string, document: Document): SourceMap | undefined {
  try {
    const tokens = tokenize(text);
    const root = document.documentElement!;
    const origins = new WeakMap<Node, Origin>();
    let index = tokens.findIndex((t) => t.kind === 'start' || t.kind === 'empty');
    if (index < 0) return undefined;
    const prefixEnd = tokens[index]!.start;
    // A descriptor is five levels deep; a hostile one nested thousands deep is written back re-serialized.
    const visit = (node: Node, depth: number): void => {
      if (depth > MAX_MAPPED_DEPTH) throw new Error('nested too deep to map');
      const token = tokens[index++];
      if (token === undefined) throw new Error('ran out of tokens');
      if (node.nodeType === 1) {
        const element = node as Element;
        if ((token.kind !== 'start' && token.kind !== 'empty') || token.name !== element.nodeName) throw new Error(`expected <${element.nodeName}>`);
        let endTagStart = token.end;
        let end = token.end;
        if (token.kind === 'start') {
          for (let child = element.firstChild; child !== null; child = child.nextSibling) visit(child, depth + 1);
          const close = tokens[index++];
          if (close === undefined || close.kind !== 'end' || close.name !== element.nodeName) throw new Error(`expected </${element.nodeName}>`);
          endTagStart = close.start;
          end = close.end;
        }
        origins.set(node, { start: token.start, startTagEnd: token.end, endTagStart, end, fingerprint: fingerprint(node), tag: tagPrint(node) });
      } else {
        const kind = node.nodeType === 3 ? 'text' : 'other';
        if (token.kind !== kind) throw new Error(`expected ${kind} for node type ${node.nodeType}`);
        origins.set(node, { start: token.start, startTagEnd: token.end, endTagStart: token.end, end: token.end, fingerprint: fingerprint(node), tag: '' });
      }
    };
    visit(root, 0);
    return { text, prefixEnd, suffixStart: origins.get(root)!.end, origins };
  } catch {
    return undefined;
  }
}

function emit(node: Node, source: SourceMap): string {
  const origin = source.origins.get(node);
  if (origin !== undefined && origin.fingerprint === fingerprint(node)) return source.text.slice(origin.start, origin.end);
  if (node.nodeType !== 1) return fingerprint(node);
  const element = node as Element;
  let startTag: string;
  let endTag = `</${element.nodeName}>`;
  if (origin !== undefined && origin.tag === tagPrint(element)) {
    startTag = source.text.slice(origin.start, origin.startTagEnd);
    // A self-closing element that gained children needs an end tag.
    if (origin.endTagStart === origin.end) startTag = startTag.replace(/\s*\/>$/, '>');
    else endTag = source.text.slice(origin.endTagStart, origin.end);
  } else {
    startTag = tagPrint(element).replace(/\s*\/>$/, '>');
  }
  let children = '';
  for (let child = element.firstChild; child !== null; child = child.nextSibling) children += emit(child, source);
  return `${startTag}${children}${endTag}`;
}

/** The document as text: the original bytes wherever nothing changed. */
export function serializeWithSource(document: Document, source: SourceMap | undefined): string {
  if (source === undefined) {
    const body = serializer.serializeToString(document);
    return body.startsWith('<?xml') ? body : `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
  }
  const root = document.documentElement!;
  return source.text.slice(0, source.prefixEnd) + emit(root, source) + source.text.slice(source.suffixStart);
}

function elementChildren(parent: Element): Element[] {
  const out: Element[] = [];
  for (let node = parent.firstChild; node !== null; node = node.nextSibling) if (node.nodeType === 1) out.push(node as Element);
  return out;
}

/** The whitespace text node right before `node`, if any (its indentation). */
function indentBefore(node: Node): Node | undefined {
  const previous = node.previousSibling;
  return previous !== null && previous.nodeType === 3 && /^\s*$/.test((previous as unknown as { data: string }).data) ? previous : undefined;
}

/**
 * Inserts `element` into `parent` where ploop writes it: before the first known sibling that ploop writes
 * after it, else after the last element child. The neighbour's indentation is copied so the file stays tidy.
 */
export function insertOrdered(parent: Element, element: Element): void {
  const order = PLOOP_ORDER[parent.nodeName] ?? [];
  const rank = order.indexOf(element.nodeName);
  const children = elementChildren(parent);
  const before = rank < 0 ? undefined : children.find((c) => order.indexOf(c.nodeName) > rank);
  const document = parent.ownerDocument!;
  if (before !== undefined) {
    parent.insertBefore(element, before);
    const indent = indentBefore(element);
    if (indent !== undefined) parent.insertBefore(document.createTextNode((indent as unknown as { data: string }).data), before);
    return;
  }
  const last = children[children.length - 1];
  if (last === undefined) {
    parent.appendChild(element);
    return;
  }
  const indent = indentBefore(last);
  const after = last.nextSibling;
  if (indent !== undefined) parent.insertBefore(document.createTextNode((indent as unknown as { data: string }).data), after);
  parent.insertBefore(element, after);
}

/** Removes an element and the indentation before it, so no blank line is left. */
export function removeElement(element: Element): void {
  const parent = element.parentNode!;
  const indent = indentBefore(element);
  if (indent !== undefined) parent.removeChild(indent);
  parent.removeChild(element);
}

/**
 * Element children of `parent` that ploop's reader would misread: anything after the first repeating
 * element (Image, Shot, Storage) that is not another one of it.
 */
export function misplacedAfterRepeating(parent: Element): string[] {
  const order = PLOOP_ORDER[parent.nodeName];
  if (order === undefined || !['Storage', 'Snapshots', 'StorageData'].includes(parent.nodeName)) return [];
  const repeating = order[order.length - 1]!;
  const children = elementChildren(parent);
  const first = children.findIndex((c) => c.nodeName === repeating);
  if (first < 0) return [];
  return children.slice(first).filter((c) => c.nodeName !== repeating).map((c) => c.nodeName);
}

/**
 * ploop's reader takes every element after the first Image, Shot or Storage as another one of them and
 * fails; an element ploop writes (say a Preallocated that an older version of this tool appended) is moved
 * back to its place. Unknown elements stay where they are.
 */
export function placeKnownElements(document: Document): void {
  const root = document.documentElement!;
  const storageData = elementChildren(root).find((e) => e.nodeName === 'StorageData');
  const storage = storageData && elementChildren(storageData).find((e) => e.nodeName === 'Storage');
  const snapshots = elementChildren(root).find((e) => e.nodeName === 'Snapshots');
  for (const parent of [storageData, storage, snapshots]) {
    if (!parent) continue;
    const known = PLOOP_ORDER[parent.nodeName] ?? [];
    for (const name of misplacedAfterRepeating(parent).filter((n) => known.includes(n))) {
      const element = elementChildren(parent).filter((e) => e.nodeName === name).at(-1)!;
      removeElement(element);
      insertOrdered(parent, element);
    }
  }
}
