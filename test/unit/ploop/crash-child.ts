// Child process for the crash tests: runs one operation and SIGKILLs itself after the Nth durable write.
// Usage: vite-node crash-child.ts <grow|shrink|compact|preallocate> <folder> <killAfter|0> <arg>
import { closePloopImage, layoutOf, openPloopImage, recoverPloopImage } from '../../../src/formats/ploop/image.js';
import { executeResize, planResize } from '../../../src/formats/ploop/resize.js';
import { executeCompact, planCompact } from '../../../src/formats/ploop/compact.js';
import { executeConvert, planConvert } from '../../../src/formats/ploop/convert.js';

const [op, folder, killAfterText, arg] = process.argv.slice(2);
const killAfter = Number(killAfterText);
const image = openPloopImage(folder!, { write: true });
if (image.pendingRecovery.length > 0) recoverPloopImage(image);
let writes = 0;
image.deltas[0]!.onDurable = () => {
  writes++;
  if (writes === killAfter) process.kill(process.pid, 'SIGKILL');
};
if (op === 'grow' || op === 'shrink') {
  executeResize(image, planResize(layoutOf(image, 0), [], Number(arg)));
} else if (op === 'compact') {
  executeCompact(image, planCompact(layoutOf(image, 0), [], arg!.split(',').map(Number)));
} else if (op === 'preallocate') {
  executeConvert(image, planConvert(image, 'preallocated'));
} else {
  throw new Error(`unknown operation ${op}`);
}
closePloopImage(image);
process.stdout.write(`writes=${writes}\n`);
