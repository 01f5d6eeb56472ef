// The guest layer on a real appliance: KVM→TCG fallback with the host cache, and the typed calls on a factory image.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, type BuiltImage } from '../factory/index.js';
import { GuestSession } from '../../src/guest/session.js';
import { cachedAccel } from '../../src/guest/accel.js';
import { listPartitions, tableType, gptAttributes } from '../../src/guest/partitions.js';
import { listFilesystems, vfsMinimumSize } from '../../src/guest/filesystems.js';
import { setLogSink, setVerbose } from '../../src/util/log.js';

let dir: string;
let image: BuiltImage;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'prl-appliance-'));
  image = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir, sizeMiB: 512, filesMiB: 8, deletedMiB: 8 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the appliance', () => {
  it('falls back to TCG when KVM does not start, remembers it, and reads partitions and filesystems', async () => {
    const saved = { ...process.env };
    // The first start tries KVM (which hangs on these machines), gives up after the timeout and retries with TCG.
    delete process.env.LIBGUESTFS_BACKEND_SETTINGS;
    process.env.PRL_DISK_TOOL_CACHE_DIR = join(dir, 'cache');
    process.env.PRL_DISK_TOOL_KVM_TIMEOUT_MS = '10000';
    const log: string[] = [];
    setVerbose(true);
    setLogSink((line) => log.push(line));
    const notices: string[] = [];
    let session: GuestSession | undefined;
    try {
      session = await GuestSession.launch([{ path: image.dataFile, format: 'qcow2', readonly: true }], { onNotice: (m) => notices.push(m) });
      if (session.accel === 'tcg') {
        expect(notices.join('\n')).toMatch(/did not start with KVM .*retrying with TCG/);
        expect(JSON.parse(readFileSync(join(dir, 'cache', 'appliance-accel.json'), 'utf8'))).toMatchObject({ accel: 'tcg' });
        expect(cachedAccel()).toBe('tcg');
      }
      expect(log.some((line) => /^\+ guestfish/.test(line))).toBe(true);

      expect(await tableType(session, '/dev/sda')).toBe('gpt');
      const partitions = await listPartitions(session, '/dev/sda');
      expect(partitions.map((p) => p.number)).toEqual(image.partitions.map((p) => p.number));
      expect(partitions.map((p) => p.startByte / 512)).toEqual(image.partitions.map((p) => p.startSector));
      const last = image.partitions.at(-1)!;
      const attributes = await gptAttributes(session, '/dev/sda', last.number);
      expect(attributes.name).toBe(last.name);
      expect(attributes.guid.toLowerCase()).toBe(last.uuid?.toLowerCase());
      expect(attributes.typeGuid.toLowerCase()).toBe(last.typeId.toLowerCase());

      const filesystems = await listFilesystems(session);
      expect(filesystems[`/dev/sda${last.number}`]).toBe('ext4');
      const minimum = await vfsMinimumSize(session, `/dev/sda${last.number}`);
      expect(minimum).toBeGreaterThan(8 * 2 ** 20);
      expect(minimum).toBeLessThan(last.sizeSectors * 512);

      // A failing call is reported as an error and the session stays usable.
      await expect(session.call('mount', '/dev/sda1', '/')).rejects.toThrow(/The appliance could not mount/);
      expect((await session.call('echo', 'still alive')).trim()).toBe('still alive');
    } finally {
      await session?.close();
      setVerbose(false);
      process.env = saved;
    }
  });
});
