// The native table reader and writer against sfdisk and sgdisk on real tables: read what sfdisk wrote, move the
// last partition's end and the GPT backup, and have sgdisk -v / sfdisk accept the result with attributes kept.
import { afterAll, describe, expect, it } from 'vitest';
import { readTable, lastPartition, tableWrites, validateLayout, extendedContainer } from '../../../src/partitions/table.js';
import { targetEndSector } from '../../../src/partitions/layout.js';
import { applyWrites, cleanup, fileSource, makeDisk, sh } from './disk-fixture.js';

afterAll(cleanup);
const MiB = 1024 * 1024;

const GPT = `label: gpt
label-id: 11111111-2222-4333-8444-555555555555
start=2048, size=16384, type=21686148-6449-6E6F-744E-656564454649, name="bios boot"
start=18432, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, name="data part", attrs="GUID:60"
`;
const MBR = `label: dos
start=2048, size=16384, type=83
start=18432, type=7, bootable
`;
const LOGICAL = `label: dos
start=2048, size=16384, type=83
start=18432, type=5
start=20480, size=16384, type=83
start=38912, type=82
`;

describe('readTable', () => {
  it('reads a GPT as sfdisk wrote it', async () => {
    const table = await readTable(fileSource(makeDisk('gpt.raw', 64, GPT)));
    expect(table.kind).toBe('gpt');
    expect(validateLayout(table)).toEqual([]);
    expect(lastPartition(table)).toMatchObject({ number: 2, startSector: 18432, endSector: 63 * 2048 - 1, typeId: '0FC63DAF-8483-4772-8E79-3D69D8477DE4' });
  });

  it('reads an MBR with a bootable primary', async () => {
    const table = await readTable(fileSource(makeDisk('mbr.raw', 64, MBR)));
    expect(table.kind).toBe('mbr');
    expect(lastPartition(table)).toMatchObject({ number: 2, kind: 'primary', startSector: 18432, endSector: 64 * 2048 - 1, typeId: '07' });
  });

  it('follows the logical chain', async () => {
    const table = await readTable(fileSource(makeDisk('logical.raw', 64, LOGICAL)));
    expect(table.kind === 'mbr' && table.partitions.map((p) => `${p.number}:${p.kind}`)).toEqual(['1:primary', '2:extended', '5:logical', '6:logical']);
    expect(lastPartition(table)).toMatchObject({ number: 6, kind: 'logical', startSector: 38912, endSector: 64 * 2048 - 1, typeId: '82' });
    expect(extendedContainer(table)).toMatchObject({ number: 2, startSector: 18432 });
  });

  it('sees no table on a blank disk or an NTFS boot sector', async () => {
    const blank = makeDisk('blank.raw', 4, 'label: dos\n');
    expect((await readTable(fileSource(blank))).kind).toBe('none');
  });

  it('rejects a GPT whose entry array was damaged, naming the rule', async () => {
    const path = makeDisk('bad.raw', 64, GPT);
    applyWrites(path, 64 * MiB, [{ offsetBytes: 1024 + 128 + 56, bytes: Buffer.from('x'), what: 'name' }]);
    await expect(readTable(fileSource(path))).rejects.toThrow(/entry array checksum does not match/);
  });
});

describe('tableWrites', () => {
  it('GPT grow: backup at the new end, last partition to the last usable sector, sgdisk -v clean, attributes kept', async () => {
    const path = makeDisk('gpt-grow.raw', 64, GPT);
    const table = await readTable(fileSource(path));
    const sectors = 128 * 2048;
    const end = targetEndSector(table, lastPartition(table)!, sectors);
    expect(end).toBe(sectors - 34);
    applyWrites(path, 128 * MiB, tableWrites(table, sectors, end));
    expect(sh('sgdisk', ['-v', path])).toMatch(/No problems found/);
    const dump = sh('sfdisk', ['-d', path]);
    expect(dump).toMatch(/start=\s*18432, size=\s*243679, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, name="data part", attrs="GUID:60"/);
  });

  it('GPT shrink without moving partitions keeps the table valid on the smaller disk', async () => {
    const path = makeDisk('gpt-plain.raw', 64, GPT.replace('type=0FC63DAF', 'size=40960, type=0FC63DAF'));
    const table = await readTable(fileSource(path));
    applyWrites(path, 32 * MiB, tableWrites(table, 32 * 2048));
    expect(sh('sgdisk', ['-v', path])).toMatch(/No problems found/);
  });

  it('MBR shrink of the last primary keeps id and bootable flag', async () => {
    const path = makeDisk('mbr-shrink.raw', 64, MBR);
    const table = await readTable(fileSource(path));
    applyWrites(path, 64 * MiB, tableWrites(table, 40 * 2048, 40 * 2048 - 1));
    expect(sh('sfdisk', ['-d', path])).toMatch(/start=\s*18432, size=\s*63488, type=7, bootable/);
  });

  it('logical grow widens the extended container and the logical partition', async () => {
    const path = makeDisk('logical-grow.raw', 64, LOGICAL);
    const table = await readTable(fileSource(path));
    applyWrites(path, 96 * MiB, tableWrites(table, 96 * 2048, 96 * 2048 - 1));
    const dump = sh('sfdisk', ['-d', path]);
    expect(dump).toMatch(/start=\s*18432, size=\s*178176, type=5/);
    expect(dump).toMatch(/start=\s*38912, size=\s*157696, type=82/);
    const again = await readTable(fileSource(path));
    expect(lastPartition(again)).toMatchObject({ number: 6, endSector: 96 * 2048 - 1 });
  });
});
