// Builds the README demo's sample disk: a 1 GiB qcow2 VM image, GPT, ext4 holding files (usage: demo-image DIR).
import { join } from 'node:path';
import { buildImage } from './factory/index.js';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: demo-image DIR\n');
  process.exit(2);
}
const image = await buildImage({ format: 'qcow2', table: 'gpt', content: 'ext4', dir: join(dir, 'demo'), name: 'disk', sizeMiB: 1024, filesMiB: 64, deletedMiB: 32 });
process.stdout.write(`Built ${image.hdd}: GPT, ext4 with ${Object.keys(image.checksums).length} files.\n`);
