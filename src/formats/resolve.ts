// --hdd → which image it names: a qcow2 file, or a ploop folder (given as the folder or a file inside it).
import { statSync, lstatSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ToolError } from '../util/errors.js';

export const PLOOP_DESCRIPTOR = 'DiskDescriptor.xml';
export const PLOOP_LOCK = 'DiskDescriptor.xml.lck';

export type ImageRef =
  | { format: 'qcow2'; path: string; lockPath: string }
  | { format: 'ploop'; folder: string; descriptorPath: string; lockPath: string };

function invalid(hdd: string, why: string): ToolError {
  return new ToolError('invalid-path', `Invalid disk path "${hdd}": ${why}`);
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

export function resolveHdd(hdd: string): ImageRef {
  const path = resolve(hdd);
  let kind;
  try {
    lstatSync(path);
    kind = statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw invalid(hdd, 'it is a symbolic link loop.');
    if (code === 'ENOENT') throw invalid(hdd, 'no such file or folder; give the image file, or the ploop folder holding DiskDescriptor.xml.');
    if (code === 'EACCES') throw invalid(hdd, 'permission denied.');
    throw invalid(hdd, (error as Error).message);
  }
  if (kind.isDirectory()) {
    const folder = realpathSync(path);
    const descriptorPath = join(folder, PLOOP_DESCRIPTOR);
    if (!isFile(descriptorPath)) throw invalid(hdd, `the folder holds no ${PLOOP_DESCRIPTOR}; give a qcow2 file or a ploop folder.`);
    return { format: 'ploop', folder, descriptorPath, lockPath: join(folder, PLOOP_LOCK) };
  }
  if (!kind.isFile()) throw invalid(hdd, 'it is not a regular file or a folder (a device, socket or pipe cannot be an image).');
  const real = realpathSync(path);
  const folder = dirname(real);
  const descriptorPath = join(folder, PLOOP_DESCRIPTOR);
  if (isFile(descriptorPath)) return { format: 'ploop', folder, descriptorPath, lockPath: join(folder, PLOOP_LOCK) };
  return { format: 'qcow2', path: real, lockPath: real };
}
