// Sizes: the SIZE argument, --units, and the arithmetic on bytes and sectors.
import { UsageError } from './errors.js';

export const SECTOR_BYTES = 512;
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export type Unit = 'K' | 'M' | 'G' | 'T';
export const UNIT_BYTES: Record<Unit, number> = { K: KiB, M: MiB, G: GiB, T: TiB };

/** Largest size we accept: qcow2 and ploop both stop well below this (ploop: 2^32 clusters). */
export const MAX_SIZE_BYTES = 64 * TiB;

/** Parses SIZE as the original did: digits, then an optional K, M, G or T (binary); no unit means MiB. */
export function parseSize(text: string): number {
  const match = /^([0-9]+)([KMGTkmgt])?$/.exec(text);
  if (!match) {
    throw new UsageError(`Invalid size "${text}": give a whole number with an optional unit K, M, G or T, such as 20G.`);
  }
  const unit = (match[2]?.toUpperCase() ?? 'M') as Unit;
  const bytes = BigInt(match[1]!) * BigInt(UNIT_BYTES[unit]);
  if (bytes === 0n) throw new UsageError('The size must not be zero.');
  if (bytes > BigInt(MAX_SIZE_BYTES)) {
    throw new UsageError(`Invalid size "${text}": the largest supported size is ${MAX_SIZE_BYTES / TiB}T.`);
  }
  return Number(bytes);
}

export function parseUnit(text: string): Unit {
  const unit = text.toUpperCase();
  if (unit === 'K' || unit === 'M' || unit === 'G' || unit === 'T') return unit;
  throw new UsageError(`Invalid unit "${text}": use K, M, G or T.`);
}

/** Bytes expressed in a unit, rounded up so that a minimum never reads smaller than it is. */
export function toUnitCeil(bytes: number, unit: Unit): number {
  return Math.ceil(bytes / UNIT_BYTES[unit]);
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

export function alignDown(value: number, alignment: number): number {
  return Math.floor(value / alignment) * alignment;
}

/** A short human form for messages: 1.5 GiB, 300 MiB, 12 KiB. */
export function formatBytes(bytes: number): string {
  const units: [number, string][] = [
    [TiB, 'TiB'],
    [GiB, 'GiB'],
    [MiB, 'MiB'],
    [KiB, 'KiB'],
  ];
  for (const [size, name] of units) {
    if (Math.abs(bytes) >= size) {
      const value = bytes / size;
      return `${Number.isInteger(value) ? value : value.toFixed(1)} ${name}`;
    }
  }
  return `${bytes} bytes`;
}

/** The size as the SIZE argument would spell it, rounded up to whole MiB (what the user can paste back). */
export function formatSizeArgument(bytes: number): string {
  const mib = Math.ceil(bytes / MiB);
  return mib % 1024 === 0 ? `${mib / 1024}G` : `${mib}M`;
}
