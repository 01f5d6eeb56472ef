// The image session: every command opens its image here, once. Resolve --hdd, lock, validate the whole chain
// natively (nothing outside the image's folder is opened before that, and nothing unsafe after), refuse an
// image a VM or a running container holds, and load the facts the command plans from.
import { accessSync, constants, existsSync, lstatSync } from 'node:fs';
import { dirname } from 'node:path';
import { resolveHdd, type ImageRef } from '../formats/resolve.js';
import { accessible } from '../util/host-files.js';
import { NotSupported, Refused, ToolError } from '../util/errors.js';
import { acquireLock, type HeldLock } from '../util/lock.js';
import { onExit } from '../util/cancel.js';
import { infoChain } from '../formats/qcow2/qemu-img.js';
import { validateQcow2Chain, type ChainLayer } from '../formats/qcow2/chain.js';
import { refuseLiveOutsideLayers } from '../formats/qcow2/layers.js';
import { readDescriptor, type PloopDescriptor } from '../formats/ploop/descriptor.js';
import { kernelMountsOf, writersOf } from '../formats/ploop/holders.js';
import { closePloopImage, openPloopImage, type ChainChange, type PloopImage as PloopHandle } from '../formats/ploop/image.js';
import { loadImage, type Image } from '../formats/image.js';

export type OpenMode = 'query' | 'modify';

export interface OpenOptions {
  /** What a change does to a ploop chain (default: it writes the top delta); checked under --dry-run too. */
  ploopChange?: ChainChange;
  /** A dry run opens every file read-only. */
  dryRun?: boolean;
  /**
   * The command can work on a running container through the host's ploop (commands/online.ts): a kernel-mounted
   * image throws KernelMounted for it to catch, in either mode.
   */
  online?: boolean;
}

export interface OpenedImage {
  ref: ImageRef;
  /** The --hdd argument as given, for messages. */
  hdd: string;
  lock: HeldLock;
  /** The facts every command plans from, read after validation. */
  image: Image;
  /** What an interrupted operation left that the command completes first (one sentence each); planned, not done. */
  pendingRecovery: string[];
  /**
   * Who else holds a ploop image that a query opened: the kernel (a running container, whose in-use mark is the
   * kernel's and is no interrupted operation) or another process writing it. Changes never get this far.
   */
  holder?: PloopHolder;
  /** The qcow2 chain as validated, top first, each layer's identity recorded; empty for ploop. */
  layers: readonly ChainLayer[];
  /** Locks a file that is about to replace the image by a rename, so the lock keeps covering the image. */
  adopt(path: string): void;
  /** The facts again, after a change (for ploop: read from the deltas the session holds open). */
  reload(): Promise<Image>;
}

/** A change needs to write the image files and their folder (temporary files, renames); refuse early if it cannot. */
function requireWritable(paths: readonly string[], hdd: string): void {
  for (const path of paths) {
    try {
      accessSync(path, constants.W_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const subject = path === paths[0] ? `"${hdd}"` : `"${path}" (part of "${hdd}")`;
      if (code === 'EROFS') throw new Refused(`${subject} is on a read-only filesystem; remount it read-write or copy the image elsewhere. Nothing was changed.`);
      if (code === 'EACCES' || code === 'EPERM') {
        throw new Refused(`${subject} cannot be written: permission denied; run the command as a user allowed to write the image and its folder (normally root). Nothing was changed.`);
      }
      throw new Refused(`${subject} cannot be written (${code}). Nothing was changed.`);
    }
  }
}

/** ploop's lock file is created on first use; in a folder nobody may write to, a query locks the descriptor itself. */
function lockPathFor(ref: ImageRef, mode: OpenMode): string {
  if (ref.format === 'ploop' && mode === 'query' && !existsSync(ref.lockPath) && !accessible(ref.folder, constants.W_OK)) return ref.descriptorPath;
  return ref.lockPath;
}

/**
 * A running container: the kernel has the image mounted. Thrown only to a caller that asked for it (`online`),
 * after the lock is released (the host's ploop takes DiskDescriptor.xml.lck itself); to anyone else it is the
 * in-use refusal it extends.
 */
export class KernelMounted extends ToolError {
  constructor(
    message: string,
    readonly devices: readonly string[],
    readonly descriptorPath: string,
    readonly deltas: readonly string[],
    readonly clusterBytes: number,
  ) {
    super('in-use', message);
    this.name = 'KernelMounted';
  }
}

export type PloopHolder = 'kernel' | 'process';

/** A running container's deltas are the kernel's (or a process's): never change or "recover" them under it. */
function checkPloopHolders(descriptor: PloopDescriptor, mode: OpenMode, hdd: string, notice: (message: string) => void, online: boolean): PloopHolder | undefined {
  const deltas = descriptor.chain.map((link) => link.file);
  const devices = kernelMountsOf(deltas);
  const writers = writersOf(deltas);
  if (devices.length === 0 && writers.length === 0) return undefined;
  const holder = devices.length > 0 ? `mounted by the kernel as ${devices.join(', ')} (a running container)` : `open for writing by process ${writers.join(', ')}`;
  const refusal = `The ploop image "${hdd}" is ${holder}; stop the container (or that process) first, then try again. Nothing was changed.`;
  if (devices.length > 0 && (online || mode === 'modify')) throw new KernelMounted(refusal, devices, descriptor.path, deltas, descriptor.blockSizeSectors * 512);
  if (mode === 'modify') throw new ToolError('in-use', refusal);
  notice(`The ploop image "${hdd}" is ${holder}; the numbers below may be stale.`);
  return devices.length > 0 ? 'kernel' : 'process';
}

async function probeQemuLock(path: string, mode: OpenMode, hdd: string, notice: (message: string) => void): Promise<void> {
  try {
    await infoChain(path, 'qcow2', false);
  } catch (error) {
    if (mode === 'modify' || !(error instanceof ToolError) || error.kind !== 'in-use') throw error;
    notice(`The disk image "${hdd}" is in use by a running virtual machine; the numbers below may be stale.`);
  }
}

function refuseSymlinkedDescriptor(ref: Extract<ImageRef, { format: 'ploop' }>): void {
  if (lstatSync(ref.descriptorPath).isSymbolicLink()) {
    throw new NotSupported(`"${ref.descriptorPath}" is a symbolic link; a ploop descriptor must be a regular file in the image's folder. Nothing was changed.`);
  }
}

/**
 * Validates the chain and, for ploop, opens every delta once (its identity recorded, each layer a file of its own):
 * the handle everything below reads and writes through.
 */
async function validate(ref: ImageRef, mode: OpenMode, hdd: string, notice: (message: string) => void, options: OpenOptions): Promise<{ handle?: PloopHandle; layers: ChainLayer[]; holder?: PloopHolder }> {
  if (ref.format === 'qcow2') {
    const layers = validateQcow2Chain(ref.path);
    const top = layers[0]!;
    if (mode === 'modify' && top.links > 1) {
      throw new Refused(`"${hdd}" has ${top.links} names (hard links); changing it would change the other names' file too. Make it a file of its own (cp --sparse=always) and try again. Nothing was changed.`);
    }
    await refuseLiveOutsideLayers(layers, hdd);
    await probeQemuLock(ref.path, mode, hdd, notice);
    return { layers };
  }
  const descriptor = readDescriptor(ref.folder);
  const change = mode === 'query' ? 'none' : (options.ploopChange ?? 'top');
  // Holders first: a running container's deltas are not even opened for writing before it is refused or handed
  // to the host's ploop (the descriptor has already confined their names to the folder).
  const holder = checkPloopHolders(descriptor, mode, hdd, notice, options.online === true);
  const handle = openPloopImage(descriptor, { change, write: change !== 'none' && options.dryRun !== true });
  return holder === undefined ? { handle, layers: [] } : { handle, layers: [], holder };
}

/**
 * Shared lock for queries (works on a read-only file), exclusive for changes (also under --dry-run, whose checks
 * must not race a change). Validation runs under the lock, so what was validated is what the command changes.
 */
export async function openImage(hdd: string, mode: OpenMode, notice: (message: string) => void = () => {}, options: OpenOptions = {}): Promise<OpenedImage> {
  const ref = resolveHdd(hdd);
  if (ref.format === 'ploop') refuseSymlinkedDescriptor(ref);
  if (mode === 'modify') requireWritable(ref.format === 'qcow2' ? [ref.path, dirname(ref.path)] : [ref.folder, ref.descriptorPath], hdd);
  const locks: HeldLock[] = [acquireLock(lockPathFor(ref, mode), mode === 'query' ? 'shared' : 'exclusive', hdd, ref.format === 'ploop')];
  let handle: PloopHandle | undefined;
  // The deltas are closed before the lock goes: nobody else may change them while we hold them.
  const releaseAll = (): void => {
    if (handle !== undefined) closePloopImage(handle);
    handle = undefined;
    for (const lock of locks.splice(0)) lock.release();
  };
  const unregister = onExit(releaseAll);
  const lock: HeldLock = {
    path: locks[0]!.path,
    release() {
      unregister();
      releaseAll();
    },
  };
  try {
    const validated = await validate(ref, mode, hdd, notice, options);
    handle = validated.handle;
    const image = await loadImage(ref, handle);
    return {
      ref, hdd, lock, image, layers: validated.layers,
      pendingRecovery: image.format === 'ploop' ? image.pendingRecovery : [],
      ...(validated.holder === undefined ? {} : { holder: validated.holder }),
      adopt(path: string) {
        locks.push(acquireLock(path, 'exclusive', hdd));
      },
      reload: () => loadImage(ref, handle),
    };
  } catch (error) {
    lock.release();
    throw error;
  }
}
