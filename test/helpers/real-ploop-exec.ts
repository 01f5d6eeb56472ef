// How real ploop (Debian's `ploop` package, 1.15) is started on these machines; real-ploop.ts builds the oracle on it.
// Two facts make it run here:
// - it reads past its argument by up to 4 KiB (it segfaults in a small environment), so it gets an environment with
//   one variable of at least 4 KiB (PAD below);
// - version-2 images need /sys/module/ploop/parameters/large_disk_support, which a private mount namespace
//   provides: unshare -m --propagation private sh -c 'mount -t tmpfs x /sys/module && mkdir -p
//   /sys/module/ploop/parameters && echo Y > /sys/module/ploop/parameters/large_disk_support &&
//   exec ploop "$@"' sh ARGS
// No imports from the rest of the tests, so the image builders can use it without an import cycle.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const PAD = 'x'.repeat(8192);
export const PLOOP_PATH = `/usr/sbin:/sbin:${process.env['PATH'] ?? '/usr/bin:/bin'}`;
const IN_NAMESPACE =
  'mount -t tmpfs x /sys/module && mkdir -p /sys/module/ploop/parameters && echo Y > /sys/module/ploop/parameters/large_disk_support && exec ploop "$@"';

export function realPloopInstalled(): boolean {
  return PLOOP_PATH.split(':').some((dir) => existsSync(join(dir, 'ploop')));
}

/** The argv (after `unshare`) and environment that run `ploop ARGS` in the private namespace. */
export function ploopInvocation(args: readonly string[]): { argv: string[]; env: Record<string, string> } {
  if (!realPloopInstalled()) throw new Error('real ploop is not installed (Debian package "ploop"); run scripts/setup.sh');
  return { argv: ['-m', '--propagation', 'private', 'sh', '-c', IN_NAMESPACE, 'sh', ...args], env: { PATH: PLOOP_PATH, PLOOP_TEST_PAD: PAD } };
}

/**
 * Makes a delta that QEMU wrote what a ploop host holds, with ploop's own repair (`ploop check -f -S`): QEMU leaves
 * the table area after its first 4 KiB and the unwritten rest of partly written clusters as unwritten extents not
 * aligned to the cluster size (ploop 1.x's check calls the delta "sparse" on ext4), and keeps whatever CIF_Empty the
 * header had. A VZ7 host does the same repair when it mounts the image (check_deltas passes CHECK_REPAIR_SPARSE).
 * Inputs are settled so that the verifier can hold what our tool writes to ploop's strict check.
 */
export function settleDelta(delta: string): void {
  const { argv, env } = ploopInvocation(['check', '-f', '-S', delta]);
  execFileSync('unshare', argv, { env: { ...process.env, ...env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
}
