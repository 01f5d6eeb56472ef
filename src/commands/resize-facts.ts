// What resize and resize --info know before deciding anything: the image, its partition table, the last
// partition and what it holds; all read natively (qemu-io), without the appliance.
import type { Image } from '../formats/image.js';
import { ImageInvalid, Refused } from '../util/errors.js';
import { SECTOR_BYTES } from '../util/units.js';
import { type ByteSource, type DiskFile, imageSource } from '../partitions/io.js';
import { type Partition, type PartitionTable, lastPartition, readTable, validateLayout } from '../partitions/table.js';
import { type Identified, PROBE_BYTES, identify } from '../fs/registry.js';

export interface DiskFacts {
  image: Image;
  disk: DiskFile;
  source: ByteSource;
  sizeBytes: number;
  table: PartitionTable;
  /** The partition that ends last; undefined without a table (or with an empty one). */
  last?: Partition;
  /** Where the content lives: the last partition, or the whole disk without a table. */
  containerStartBytes: number;
  containerBytes: number;
  /** The appliance's device for the container: /dev/sda2, or /dev/sda. */
  guestDevice: string;
  /** The container's first bytes, for native probes and swap re-making. */
  head: Buffer;
  content?: Identified;
  /** A fully allocated ("plain") image: new space is allocated too. */
  plain: boolean;
}

export function diskFile(image: Image): DiskFile {
  return image.format === 'qcow2' ? { path: image.path, format: 'qcow2' } : { path: image.deltas[0]!, format: 'parallels' };
}

function isPlain(image: Image): boolean {
  if (image.format === 'qcow2') return image.chain[0]!.actualSize >= image.virtualSizeBytes;
  return image.descriptor.preallocated === true;
}

export async function readDiskFacts(image: Image): Promise<DiskFacts> {
  if (image.format === 'qcow2' && image.snapshots.length > 0) {
    throw new Refused(
      `The image has ${image.snapshots.length} internal snapshot(s), which qemu-img cannot resize around; merge them first (prl_disk_tool merge --hdd ...), then resize.`,
    );
  }
  if (image.format === 'ploop' && image.deltas.length > 1) {
    throw new Refused(`The ploop image has ${image.deltas.length - 1} snapshot delta(s); merge them first, then resize.`);
  }
  const disk = diskFile(image);
  const source = imageSource(disk, image.virtualSizeBytes);
  const table = await readTable(source);
  const findings = validateLayout(table);
  if (findings.length > 0) throw new ImageInvalid('The partition table is inconsistent (repair it first)', findings);
  const last = lastPartition(table);
  const containerStartBytes = last ? last.startSector * SECTOR_BYTES : 0;
  const containerBytes = last ? (last.endSector - last.startSector + 1) * SECTOR_BYTES : image.virtualSizeBytes;
  const head = table.kind === 'none' || last ? await source.read(containerStartBytes, PROBE_BYTES) : Buffer.alloc(0);
  const facts: DiskFacts = {
    image,
    disk,
    source,
    sizeBytes: image.virtualSizeBytes,
    table,
    containerStartBytes,
    containerBytes,
    guestDevice: last ? `/dev/sda${last.number}` : '/dev/sda',
    head,
    plain: isPlain(image),
  };
  if (last) facts.last = last;
  const content = head.length > 0 ? identify(head) : undefined;
  if (content) facts.content = content;
  return facts;
}
