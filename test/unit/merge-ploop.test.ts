// The descriptor edit that ends a ploop merge, the branch refusal, and the ploop convert no-op rule.
import { describe, expect, it } from 'vitest';
import { parseDescriptor, serializeDescriptor } from '../../src/formats/ploop/descriptor.js';
import { refuseBranches, setSingleImage } from '../../src/commands/merge/ploop-descriptor.js';
import { ploopConvertIsNoop } from '../../src/commands/convert/ploop.js';
import type { ConvertPlan } from '../../src/formats/ploop/convert.js';

const TOP = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
const MID = '{22222222-1111-2222-3333-444444444444}';
const BASE = '{11111111-1111-2222-3333-444444444444}';
const ROOT = '{00000000-0000-0000-0000-000000000000}';

function xml(extraShot = ''): string {
  return `<?xml version="1.0"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters><Disk_size>131072</Disk_size><Heads>16</Heads><Sectors>32</Sectors><Padding>0</Padding></Disk_Parameters>
  <StorageData><Storage><Start>0</Start><End>131072</End><Blocksize>2048</Blocksize><Unknown keep="yes"/>
    <Image><GUID>${TOP}</GUID><Type>Compressed</Type><File>root.hds.2</File></Image>
    <Image><GUID>${MID}</GUID><Type>Compressed</Type><File>root.hds.1</File></Image>
    <Image><GUID>${BASE}</GUID><Type>Compressed</Type><File>root.hds</File></Image>
  </Storage></StorageData>
  <Snapshots><TopGUID>${TOP}</TopGUID>
    <Shot><GUID>${TOP}</GUID><ParentGUID>${MID}</ParentGUID></Shot>
    <Shot><GUID>${MID}</GUID><ParentGUID>${BASE}</ParentGUID><Name>before upgrade</Name></Shot>
    <Shot><GUID>${BASE}</GUID><ParentGUID>${ROOT}</ParentGUID></Shot>${extraShot}
  </Snapshots>
</Parallels_disk_image>
`;
}

describe('setSingleImage', () => {
  it('leaves the base file as the only image, under the top GUID, keeping unknown nodes', () => {
    const descriptor = parseDescriptor(xml(), '/images/ct/DiskDescriptor.xml');
    setSingleImage(descriptor);
    const again = parseDescriptor(serializeDescriptor(descriptor), '/images/ct/DiskDescriptor.xml');
    expect(again.chain).toHaveLength(1);
    expect(again.chain[0]).toMatchObject({ guid: TOP, fileText: 'root.hds', parentGuid: ROOT });
    const text = serializeDescriptor(descriptor);
    expect(text).toContain('<Unknown keep="yes"/>');
    expect(text).not.toContain(MID);
    expect(text).not.toContain(BASE);
    expect(text.match(/<Image>/g)).toHaveLength(1);
  });
  it('refuses a descriptor with a Shot outside the chain', () => {
    const branch = `<Shot><GUID>{33333333-1111-2222-3333-444444444444}</GUID><ParentGUID>${BASE}</ParentGUID></Shot>`;
    expect(() => refuseBranches(parseDescriptor(xml(branch), '/images/ct/DiskDescriptor.xml'))).toThrow(/branch/);
  });
});

describe('ploopConvertIsNoop', () => {
  const pre = (runs: number): ConvertPlan => ({ target: 'preallocated', allocate: Array.from({ length: runs }, () => ({ fromIndex: 0, toIndex: 1, firstOffset: 0 })), allocateBytes: runs });
  const exp = (released: number): ConvertPlan =>
    ({ target: 'expanding', allocate: [], allocateBytes: 0, compact: { steps: [], releasedClusters: released, notReclaimable: 0, reclaimedBytes: released, newFileSizeBytes: 0 } }) as ConvertPlan;
  it.each([
    [pre(0), true, true],
    [pre(0), false, false], // the descriptor must still be told
    [pre(2), true, false],
    [exp(0), false, true],
    [exp(0), true, false],
    [exp(3), false, false],
  ])('plan %#: preallocated now %s → no-op %s', (plan, now, noop) => expect(ploopConvertIsNoop(plan, now)).toBe(noop));
});
