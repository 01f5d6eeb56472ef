// Raw disk files made by sfdisk (the reference writer), read and patched through the same ByteSource interface.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ByteSource } from '../../../src/partitions/io.js';
import type { SectorWrite } from '../../../src/partitions/gpt.js';

export const work = mkdtempSync(join(tmpdir(), 'prl-partitions-unit-'));
export const cleanup = (): void => rmSync(work, { recursive: true, force: true });

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { input, env: { ...process.env, LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}

export function makeDisk(name: string, sizeMiB: number, script: string): string {
  const path = join(work, name);
  writeFileSync(path, '');
  truncateSync(path, sizeMiB * 1024 * 1024);
  sh('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', path], script);
  return path;
}

export function fileSource(path: string): ByteSource {
  return {
    sizeBytes: statSync(path).size,
    async read(offset, length) {
      const buffer = Buffer.alloc(length);
      const fd = openSync(path, 'r');
      try {
        readSync(fd, buffer, 0, length, offset);
      } finally {
        closeSync(fd);
      }
      return buffer;
    },
  };
}

export function applyWrites(path: string, sizeBytes: number, writes: SectorWrite[]): void {
  truncateSync(path, sizeBytes);
  const fd = openSync(path, 'r+');
  try {
    for (const write of writes) writeSync(fd, write.bytes, 0, write.bytes.length, write.offsetBytes);
  } finally {
    closeSync(fd);
  }
}
