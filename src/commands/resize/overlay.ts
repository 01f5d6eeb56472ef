// The transaction of resize --resize_partition: guest changes go into a temporary qcow2 overlay beside the image
// and reach the image only by the final commit. Before the commit the overlay is renamed to a fixed name, so a
// crash during the commit leaves a file that the next run commits again (commit is idempotent: it copies the
// same clusters); any other leftover overlay is an abandoned attempt and is removed.
import { existsSync, readdirSync, renameSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { onExit } from '../../util/cancel.js';
import { fsyncDirectoryOf, removeIfExists, tempPathBeside } from '../../util/atomic.js';
import { requireFreeSpace } from '../../util/space.js';
import { repairLeaks } from '../../formats/qcow2/qemu-img.js';
import { clearUnderZeroClusters, zeroAllZeroClusters } from '../../formats/qcow2/zero-clusters.js';
import { commitOverlay, createOverlayFile, freeingLeaksIfInterrupted } from '../../formats/qcow2/changes.js';
import type { DiskFile } from '../../partitions/io.js';
import type { Progress } from '../../util/progress.js';

const PURPOSE = 'resize';
/** The overlay's cluster size, stated at creation: the zero scan works at this granularity. */
const OVERLAY_CLUSTER_BYTES = 65536;

export interface OverlayOptions {
  /**
   * Turn the overlay's all-zero data clusters into zero clusters before the commit, so that zeros the appliance
   * wrote do not allocate in the base. Off for a plain image (it stays fully allocated) and for ploop, whose
   * commit skips zero pieces itself.
   */
  sparseZeroes: boolean;
}

export function commitPathFor(disk: DiskFile): string {
  return join(dirname(disk.path), `.${basename(disk.path)}.${PURPOSE}-commit.prl-tmp`);
}

/** Overlays of abandoned attempts (killed before their commit); safe to remove under the exclusive lock. */
export function staleOverlays(disk: DiskFile): string[] {
  const prefix = `.${basename(disk.path)}.${PURPOSE}-`;
  const commit = basename(commitPathFor(disk));
  return readdirSync(dirname(disk.path))
    .filter((name) => name.startsWith(prefix) && name.endsWith('.prl-tmp') && name !== commit)
    .map((name) => join(dirname(disk.path), name));
}

/** Copies an overlay's clusters into its base; must be idempotent (an interrupted commit is run again). */
export type Committer = (overlayPath: string, progress: Progress) => Promise<void>;

/**
 * Into the qcow2 image `imagePath`: first the image's clusters under the overlay's zero clusters are freed (after the
 * commit point, so a crash between the two is completed by the rerun), so that the commit itself frees nothing
 * (formats/qcow2/zero-clusters.ts, clearUnderZeroClusters); then qemu-img commit with -d, which keeps the overlay's
 * data (we delete the file) so it can be re-run.
 */
export function qemuCommitInto(imagePath: string): Committer {
  return async (overlayPath, progress) => {
    await clearUnderZeroClusters(overlayPath, 1, imagePath);
    // Interrupted, the rerun finishes the commit; the clusters the killed one leaked are freed before the exit.
    await freeingLeaksIfInterrupted(imagePath, () => commitOverlay(overlayPath, (fraction) => progress.update(fraction)));
  };
}

async function commitInto(overlayPath: string, progress: Progress, committer: Committer): Promise<void> {
  progress.step('Committing the changes into the image');
  await committer(overlayPath, progress);
  progress.done();
}

/** Completes a commit a previous run could not finish; returns true when there was one. */
export async function finishInterruptedCommit(disk: DiskFile, progress: Progress, committer: Committer): Promise<boolean> {
  const pending = commitPathFor(disk);
  if (!existsSync(pending)) return false;
  await commitInto(pending, progress, committer);
  removeIfExists(pending);
  fsyncDirectoryOf(pending);
  // The killed commit may have allocated clusters it never used; the rerun's commit does not reuse them.
  if (disk.format === 'qcow2') await repairLeaks(disk.path);
  return true;
}

/** Refuses early when the folder cannot hold the overlay's worst case. */
export function checkFreeSpace(disk: DiskFile, neededBytes: number): void {
  requireFreeSpace(disk.path, neededBytes, 'the temporary overlay of the resize');
}

export class Overlay {
  private committed = false;
  private readonly unregister: () => void;

  private constructor(
    readonly path: string,
    private readonly base: DiskFile,
    private readonly committer: Committer,
    private readonly options: OverlayOptions,
  ) {
    this.unregister = onExit(() => this.discard());
  }

  static async begin(base: DiskFile, sizeBytes: number, committer: Committer, options: OverlayOptions): Promise<Overlay> {
    const path = tempPathBeside(base.path, PURPOSE);
    const overlay = new Overlay(path, base, committer, options);
    await createOverlayFile(path, base.path, base.format, { sizeBytes, clusterBytes: OVERLAY_CLUSTER_BYTES });
    return overlay;
  }

  get disk(): DiskFile {
    return { path: this.path, format: 'qcow2' };
  }

  /** Makes the overlay's changes the image's; from the rename on, a crash is completed by the next run. */
  async commit(progress: Progress): Promise<void> {
    // Before the rename: a crash here leaves an abandoned overlay, which the next run removes.
    if (this.options.sparseZeroes) {
      progress.step('Finding the zero-filled clusters the changes wrote');
      await zeroAllZeroClusters(this.path, OVERLAY_CLUSTER_BYTES);
      progress.done();
    }
    const pending = commitPathFor(this.base);
    renameSync(this.path, pending);
    fsyncDirectoryOf(pending);
    this.committed = true;
    this.unregister();
    await commitInto(pending, progress, this.committer);
    removeIfExists(pending);
    fsyncDirectoryOf(pending);
  }

  /** Removes an uncommitted overlay (every exit path); the image never saw its changes. */
  discard(): void {
    if (this.committed) return;
    this.unregister();
    removeIfExists(this.path);
  }
}
