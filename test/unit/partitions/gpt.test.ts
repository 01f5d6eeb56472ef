// GPT codec on a table sfdisk wrote: fields decode as sfdisk reports them, and poking one named field of the
// pristine header or array gives exactly the one finding of its rule (QEMU iotest 076 style).
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeGptEntries, decodeGptHeader, headerChecksum, validateGpt } from '../../../src/partitions/gpt.js';
import { cleanup, makeDisk } from './disk-fixture.js';

afterAll(cleanup);

const disk = readFileSync(
  makeDisk(
    'codec.raw',
    16,
    `label: gpt
start=2048, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, name="näme", attrs="GUID:60"
`,
  ),
);
const sectors = disk.length / 512;
const pristineHeader = disk.subarray(512, 1024);
const pristineArray = disk.subarray(1024, 1024 + 128 * 128);

/** Pokes one field of a header copy and re-seals its CRC, so that only the poked rule can fire. */
function poked(offset: number, write: (b: Buffer) => void, reseal = true): Buffer {
  const copy = Buffer.from(pristineHeader);
  write(copy.subarray(offset));
  if (reseal) copy.writeUInt32LE(headerChecksum(copy, 92), 16);
  return copy;
}

describe('GPT codec', () => {
  it('decodes the header and the entry as sfdisk wrote them', () => {
    const header = decodeGptHeader(pristineHeader)!;
    expect(header).toMatchObject({ myLba: 1, alternateLba: sectors - 1, firstUsableLba: 2048, lastUsableLba: sectors - 34, entriesLba: 2, entryCount: 128, entrySize: 128 });
    expect(decodeGptEntries(header, pristineArray)).toEqual([
      { number: 1, typeGuid: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', guid: 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE', startLba: 2048, endLba: 6143, attributes: 1n << 60n, name: 'näme' },
    ]);
    expect(validateGpt(header, pristineArray, sectors)).toEqual([]);
  });

  it.each([
    ['header CRC', poked(16, (b) => b.writeUInt32LE(0), false), /header checksum does not match/],
    ['header size', poked(12, (b) => b.writeUInt32LE(600)), /header size 600 is outside/],
    ['entry size', poked(84, (b) => b.writeUInt32LE(100)), /entry size 100 is invalid/],
    ['last usable beyond the disk', poked(48, (b) => b.writeBigUInt64LE(BigInt(sectors + 5))), /lies beyond the disk/],
  ] as const)('one finding for a poked %s', (_name, sector, rule) => {
    const findings = validateGpt(decodeGptHeader(sector)!, pristineArray, sectors);
    expect(findings).toHaveLength(1);
    expect(findings[0]).toMatch(rule);
  });

  it('one finding for an entry outside the usable area (array CRC re-sealed)', async () => {
    const { crc32 } = await import('node:zlib');
    const array = Buffer.from(pristineArray);
    array.writeBigUInt64LE(BigInt(sectors + 100), 40);
    const header = poked(88, (b) => b.writeUInt32LE(crc32(array)));
    const findings = validateGpt(decodeGptHeader(header)!, array, sectors);
    expect(findings).toEqual(['GPT partition 1 lies outside the usable area']);
  });

  it('no header without the signature', () => {
    expect(decodeGptHeader(Buffer.alloc(512))).toBeUndefined();
  });
});
