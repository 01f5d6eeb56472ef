// The backing chain of a qcow2 image, validated natively from the headers before any qemu tool sees it:
// only plain paths to regular files, each with a recorded format, no loops, no features that reach other
// files (external data files) or that we cannot read (encryption). Rules: ../shared/BRIEF.md, threat model.
import { lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ImageInvalid, NotSupported, Refused } from '../../util/errors.js';
import { FileRefused, identityOf, readRegularFileHead } from '../../util/safe-file.js';
import { configPath, loadConfig } from '../../util/config.js';
import { HEADER_READ_BYTES, MAX_BACKING_NAME_BYTES, type Qcow2Header, decodeQcow2Header, headerFindings, isMarkedCorrupt, unsupportedFeatures } from './header.js';

const MAX_CHAIN_LAYERS = 64;

export interface ChainLayer {
  /** The name qemu opens: the top's real path, or a backing name combined with its overlay's folder. */
  path: string;
  realPath: string;
  format: 'qcow2' | 'raw';
  /** The layer's file lies in the top image's own folder (only such layers may ever be written). */
  insideFolder: boolean;
  /** Hard links to the file (st_nlink). */
  links: number;
  /** Device and inode when validated (identityOf): a name is checked against it right before a rename. */
  identity: string;
  header?: Qcow2Header;
}

function invalid(path: string, finding: string): ImageInvalid {
  return new ImageInvalid(`The qcow2 image "${path}" is invalid`, [finding]);
}

/** qemu's path_has_protocol(): a colon before the first slash makes a name a protocol ("nbd:", "file:", "json:"). */
function hasProtocolPrefix(name: string): boolean {
  const colon = name.indexOf(':');
  const slash = name.indexOf('/');
  return colon >= 0 && (slash < 0 || colon < slash);
}

function backingNameOf(layer: string, raw: Buffer): string {
  const name = raw.toString('utf8');
  if (!Buffer.from(name, 'utf8').equals(raw) || /[\0-\x1f\x7f]/.test(name)) {
    throw new NotSupported(`The backing file name recorded in "${layer}" is not plain text; this tool only follows plain file paths.`);
  }
  if (name.startsWith('json:') || hasProtocolPrefix(name)) {
    throw new NotSupported(
      `The backing file of "${layer}" is named "${name}", a QEMU protocol or json: name rather than a plain file path; this tool never follows such names. Rebase the image onto a plain path (qemu-img rebase -u -F qcow2 -b PATH) and try again.`,
    );
  }
  return name;
}

/** Folders of the host's pseudo-filesystems and runtime state: nothing under them is ever an image layer. */
const HOST_PSEUDO_DIRS = ['/dev', '/proc', '/sys', '/run'];
/** Symbolic links followed in a row within one folder before the chain is called a loop. */
const MAX_LINK_HOPS = 8;

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/**
 * `name` resolved against `dir` lexically, as the kernel will resolve it: a `..` after a named component
 * (`sub/../x`) is refused, since through a symlinked `sub` the kernel would land elsewhere than the text says.
 */
function lexicalPath(overlay: string, dir: string, name: string): string {
  const segments = name.split('/').filter((segment) => segment !== '' && segment !== '.');
  const firstNamed = segments.findIndex((segment) => segment !== '..');
  if (firstNamed >= 0 && segments.slice(firstNamed).includes('..')) {
    throw new NotSupported(`The backing file of "${overlay}" is named "${name}", with ".." inside the path; name the file plainly (qemu-img rebase -u) and try again. Nothing was changed.`);
  }
  return isAbsolute(name) ? resolve(name) : resolve(dir, name);
}

/**
 * Where a backing file may lie, decided from its path alone (lexical before anything at that path is looked at,
 * then again from its real path once opened): never under the host's pseudo-filesystems; outside the image's
 * folder only as qcow2 (a raw host file is never a layer: /etc/shadow would do), and only in a folder the
 * administrator trusts when trusted_backing_dirs is set.
 */
function checkPlace(overlay: string, name: string, path: string, format: 'qcow2' | 'raw', folder: string): void {
  const pseudo = HOST_PSEUDO_DIRS.find((dir) => isUnder(path, dir));
  if (pseudo !== undefined) {
    throw new NotSupported(`The backing file "${name}" of "${overlay}" lies under ${pseudo}, which holds host devices and state, never an image layer; this tool refuses it. Nothing was changed.`);
  }
  if (dirname(path) === folder) return;
  if (format === 'raw') {
    throw new NotSupported(
      `The backing file "${name}" of "${overlay}" is a raw file outside the image's folder; a raw host file is never accepted as an image layer (only a qcow2 template may lie elsewhere). Move it into the image's folder or convert it to qcow2. Nothing was changed.`,
    );
  }
  // Compared as written: both the lexical and the real path must lie in one (the administrator names real folders).
  const trusted = loadConfig().trustedBackingDirs;
  if (trusted !== undefined && !trusted.some((dir) => isUnder(path, dir))) {
    throw new Refused(
      `The backing file "${name}" of "${overlay}" lies outside the folders the administrator trusts for templates (trusted_backing_dirs in ${configPath()}: ${trusted.join(':') || 'none'}); move the template there or change that setting. Nothing was changed.`,
    );
  }
}

/**
 * A link is followed only within its own folder: a link out of it would make another folder's file ours. Each hop
 * is read (readlink) and resolved lexically, so that nothing the link points at outside is looked at.
 */
function followWithinFolder(overlay: string, name: string, path: string): string {
  for (let hop = 0; ; hop++) {
    let stats;
    try {
      stats = lstatSync(path);
    } catch {
      throw invalid(overlay, `its backing file "${name}" does not exist`);
    }
    if (!stats.isSymbolicLink()) return path;
    if (hop === MAX_LINK_HOPS) throw invalid(overlay, `its backing file "${name}" is a chain of symbolic links that loops`);
    const target = lexicalPath(overlay, dirname(path), readlinkSync(path, 'utf8'));
    if (dirname(target) !== dirname(path)) {
      throw new NotSupported(`The backing file "${name}" of "${overlay}" is a symbolic link into another folder (${target}); name the file itself in the image (qemu-img rebase -u) and try again.`);
    }
    path = target;
  }
}

function readLayer(overlay: string, what: string, path: string): { head: Buffer; dev: number; ino: number; links: number; sizeBytes: number } {
  try {
    const { stats, head } = readRegularFileHead(path, HEADER_READ_BYTES);
    return { head, dev: stats.dev, ino: stats.ino, links: stats.nlink, sizeBytes: stats.size };
  } catch (error) {
    if (!(error instanceof FileRefused)) throw error;
    if (error.problem === 'missing') throw invalid(overlay, `its ${what} "${path}" does not exist`);
    if (error.problem === 'permission') throw new NotSupported(`The ${what} "${path}" of "${overlay}" cannot be read (permission denied); run as a user who can read it.`);
    throw new NotSupported(`The ${what} "${path}" of "${overlay}" is refused: ${error.detail}. An image layer must be a regular file.`);
  }
}

/**
 * The backing file a file names, resolved against its folder, when it is a regular qcow2 file recording a plain
 * path; undefined for anything else (another format, a protocol name, a link, a FIFO: never followed, never
 * waited on). For looking around a folder, not for validating a chain.
 */
export function recordedBackingPath(path: string): string | undefined {
  let head: Buffer;
  try {
    ({ head } = readRegularFileHead(path, HEADER_READ_BYTES));
  } catch (error) {
    if (error instanceof FileRefused) return undefined;
    throw error;
  }
  const header = decodeQcow2Header(head);
  if (header?.backingName === undefined || header.backingNameBytes > MAX_BACKING_NAME_BYTES) return undefined;
  const name = header.backingName.toString('utf8');
  return hasProtocolPrefix(name) ? undefined : resolve(dirname(path), name);
}

/** Validates the chain from `topPath` (already resolved to a real path) down to its last layer. */
export function validateQcow2Chain(topPath: string): ChainLayer[] {
  const folder = dirname(topPath);
  const layers: ChainLayer[] = [];
  const seen = new Set<string>();
  let path = topPath;
  let format: 'qcow2' | 'raw' = 'qcow2';
  let overlay = topPath;
  for (;;) {
    if (layers.length >= MAX_CHAIN_LAYERS) throw invalid(topPath, `its backing chain is longer than ${MAX_CHAIN_LAYERS} layers`);
    const what = layers.length === 0 ? 'image file' : 'backing file';
    const { head, dev, ino, links, sizeBytes } = readLayer(overlay, what, path);
    const identity = identityOf({ dev, ino });
    if (seen.has(identity)) throw invalid(topPath, `its backing chain loops back to "${path}"`);
    seen.add(identity);
    const realPath = realpathSync(path);
    if (layers.length > 0) checkPlace(overlay, path, realPath, format, folder);
    const layer: ChainLayer = { path, realPath, format, insideFolder: dirname(realPath) === folder, links, identity };
    layers.push(layer);
    if (format === 'raw') return layers;
    const header = decodeQcow2Header(head);
    if (!header) {
      throw layers.length === 1 ? new ImageInvalid(`"${path}" is not a qcow2 image`) : invalid(overlay, `its backing file "${path}" is recorded as qcow2 but is not a qcow2 image`);
    }
    layer.header = header;
    const findings = headerFindings(header, sizeBytes);
    if (findings.length > 0) throw new ImageInvalid(`The qcow2 image "${path}" is invalid`, findings);
    const unsupported = unsupportedFeatures(header);
    if (unsupported.length > 0) throw new NotSupported(`The qcow2 image "${path}" is not supported: ${unsupported.join('; ')}. Nothing was changed.`);
    // A corrupt mark means QEMU found the metadata inconsistent: even --info would report numbers from it.
    if (isMarkedCorrupt(header)) {
      throw new ImageInvalid(`The qcow2 image "${path}" is marked corrupt; repair it with "qemu-img check -r all -f qcow2 ${path}" first`);
    }
    if (header.backingName === undefined) return layers;
    const name = backingNameOf(path, header.backingName);
    if (header.backingFormat === undefined) {
      throw new Refused(
        `"${path}" names its backing file "${name}" without its format, and probing a format is unsafe; record it (qemu-img rebase -u -f qcow2 -F qcow2 -b ${JSON.stringify(name)} ${path}, or -F raw for a raw file) and try again. Nothing was changed.`,
      );
    }
    if (header.backingFormat !== 'qcow2' && header.backingFormat !== 'raw') {
      throw new NotSupported(`The backing file "${name}" of "${path}" is recorded as "${header.backingFormat}"; this tool only opens qcow2 and raw backing files. Nothing was changed.`);
    }
    overlay = path;
    format = header.backingFormat;
    const lexical = lexicalPath(overlay, dirname(overlay), name);
    checkPlace(overlay, name, lexical, format, folder);
    path = followWithinFolder(overlay, name, lexical);
  }
}
