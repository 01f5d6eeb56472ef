// Test helpers that damage an image on purpose (to prove the verifier can fail), through host tools only.
import { rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isFs, mountOptions } from './filesystems.js';
import { attachLoop, type LoopRange, mountDevice } from './host.js';
import { readLayout } from './lvm.js';
import { scoped, tool } from './run.js';
import { lastPartition, readPartitionTable, SECTOR } from './table.js';
import type { BuiltImage } from './types.js';
import { exportRaw } from './verify.js';

/** Mounts the last partition's filesystem read-write, lets `edit` change files, and writes the image back. */
export async function editFiles(image: BuiltImage, edit: (mountpoint: string) => Promise<void>): Promise<void> {
  if (!isFs(image.content) && image.content !== 'lvm') throw new Error(`${image.content} holds no files to edit`);
  await editRaw(image, (raw) =>
    scoped(async (inner) => {
      const { table } = await readPartitionTable(raw);
      const last = table === null ? undefined : lastPartition(table);
      let range: LoopRange | undefined = last === undefined ? undefined : { offsetBytes: last.start * SECTOR, sizeBytes: last.size * SECTOR };
      let device = await attachLoop(inner, raw, range);
      let kind = image.content === 'lvm' ? 'ext4' : image.content;
      if (image.content === 'lvm') {
        const layout = await readLayout(device);
        range = { offsetBytes: (range?.offsetBytes ?? 0) + layout.last.offsetBytes, sizeBytes: layout.last.sizeBytes };
        device = await attachLoop(inner, raw, range);
        kind = 'ext4';
      }
      if (!isFs(kind)) throw new Error(`cannot mount ${kind}`);
      const mnt = await mountDevice(inner, device, dirname(raw), mountOptions(kind));
      await edit(mnt);
    }),
  );
}

/** Exports the image to a raw file, lets `edit` change it (loop devices, host tools), and writes the image back. */
export async function editRaw(image: BuiltImage, edit: (raw: string) => Promise<void>): Promise<void> {
  await scoped(async (scope) => {
    const raw = await exportRaw(scope, image.dataFile, image.format);
    await edit(raw);
    const fmt = image.format === 'qcow2' ? 'qcow2' : 'parallels';
    const next = join(dirname(image.dataFile), `.factory-edit-${process.pid}.tmp`);
    try {
      await tool('qemu-img', ['convert', '-f', 'raw', '-O', fmt, ...(image.format === 'ploop' ? ['-o', 'cluster_size=1M'] : []), raw, next]);
      await rename(next, image.dataFile);
    } finally {
      await rm(next, { force: true });
    }
  });
}

/** Writes `pattern` bytes over a range of the guest disk, through qemu-io (the image stays a valid container). */
export async function overwriteGuestBytes(image: BuiltImage, offsetBytes: number, length: number, pattern = 0xa5): Promise<void> {
  const fmt = image.format === 'qcow2' ? 'qcow2' : 'parallels';
  await tool('qemu-io', ['-f', fmt, '-c', `write -P ${pattern} ${offsetBytes} ${length}`, image.dataFile]);
}
