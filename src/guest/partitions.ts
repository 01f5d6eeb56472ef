// Typed partition calls in the appliance: the table as libguestfs (parted/sgdisk) sees it, and edits.
import type { GuestSession } from './session.js';
import { parseStructList, intField, parseLines } from './parse.js';

export type TableType = 'gpt' | 'msdos' | 'unknown';

export interface GuestPartition {
  number: number;
  startByte: number;
  endByte: number; // inclusive, as parted reports it
  sizeBytes: number;
}

/** Type, GUID and name as the appliance sees them. The attribute bits are read natively (partitions/gpt.ts):
 * libguestfs 1.48's part-get-gpt-attributes answers 0 where sgdisk shows bit 60 set. */
export interface GptAttributes {
  typeGuid: string;
  guid: string;
  name: string;
}

export interface MbrAttributes {
  id: number;
  bootable: boolean;
  kind: 'primary' | 'extended' | 'logical';
}

export async function tableType(guest: GuestSession, device: string): Promise<TableType> {
  const probe = await guest.attempt('part-get-parttype', device);
  if (!probe.ok) return 'unknown';
  const type = probe.out.trim();
  return type === 'gpt' || type === 'msdos' ? type : 'unknown';
}

export async function listPartitions(guest: GuestSession, device: string): Promise<GuestPartition[]> {
  return parseStructList(await guest.call('part-list', device)).map((fields) => ({
    number: intField(fields, 'part_num', 'part-list'),
    startByte: intField(fields, 'part_start', 'part-list'),
    endByte: intField(fields, 'part_end', 'part-list'),
    sizeBytes: intField(fields, 'part_size', 'part-list'),
  }));
}

export async function gptAttributes(guest: GuestSession, device: string, number: number): Promise<GptAttributes> {
  const [typeGuid, guid, name] = await Promise.all([
    guest.call('part-get-gpt-type', device, number),
    guest.call('part-get-gpt-guid', device, number),
    guest.call('part-get-name', device, number),
  ]);
  return { typeGuid: typeGuid.trim(), guid: guid.trim(), name: name.replace(/\n$/, '') };
}

export async function mbrAttributes(guest: GuestSession, device: string, number: number): Promise<MbrAttributes> {
  const [id, bootable, kind] = await Promise.all([
    guest.call('part-get-mbr-id', device, number),
    guest.call('part-get-bootable', device, number),
    guest.call('part-get-mbr-part-type', device, number),
  ]);
  const partKind = kind.trim();
  return {
    id: Number(id.trim()),
    bootable: bootable.trim() === 'true',
    kind: partKind === 'extended' || partKind === 'logical' ? partKind : 'primary',
  };
}

/** Moves the partition's end (in 512-byte sectors, inclusive) keeping its start and attributes. */
export async function resizePartition(guest: GuestSession, device: string, number: number, endSector: number): Promise<void> {
  await guest.call('part-resize', device, number, endSector);
}

export async function deviceSizeBytes(guest: GuestSession, device: string): Promise<number> {
  return Number((await guest.call('blockdev-getsize64', device)).trim());
}

export async function listDevices(guest: GuestSession): Promise<string[]> {
  return parseLines(await guest.call('list-devices'));
}

