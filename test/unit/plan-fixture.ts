// DiskFacts for planner tests: a real sfdisk-made table read natively, with the content given by type and size.
import type { DiskFacts } from '../../src/commands/resize/facts.js';
import { filesystemFor } from '../../src/fs/registry.js';
import type { FsProbe } from '../../src/fs/types.js';
import { lastPartition, readTable } from '../../src/partitions/table.js';
import { fileSource, makeDisk } from './partitions/disk-fixture.js';

const MiB = 1024 * 1024;

export async function planFacts(script: string, sizeMiB: number, probe?: FsProbe): Promise<DiskFacts> {
  const source = fileSource(makeDisk(`plan-${Math.random()}.raw`, sizeMiB, script));
  const table = await readTable(source);
  const last = lastPartition(table)!;
  const facts = {
    image: { format: 'qcow2' },
    disk: { path: '/dev/null', format: 'qcow2' },
    source,
    sizeBytes: sizeMiB * MiB,
    table,
    last,
    containerStartBytes: last.startSector * 512,
    containerBytes: (last.endSector - last.startSector + 1) * 512,
    guestDevice: '/dev/sda2',
    head: Buffer.alloc(4096),
    plain: false,
    allocated: [],
  } as unknown as DiskFacts;
  if (probe) facts.content = { fs: filesystemFor(probe.type), probe };
  return facts;
}
