// One libguestfs appliance per command, driven through guestfish's stdin; it dies with us if we die.
import type { ChildProcess } from 'node:child_process';
import { startProcess, killGroup } from '../util/exec.js';
import { ToolError } from '../util/errors.js';
import { cancellation, onExit } from '../util/cancel.js';
import { debug } from '../util/log.js';
import { cachedAccel, rememberAccel, type Accel } from './accel.js';

export interface Drive {
  path: string;
  /** Always named: probing untrusted images is a known hole. */
  format: 'qcow2' | 'parallels' | 'raw';
  readonly: boolean;
  /** Let discards from the guest reach the image (for compact). */
  discard?: boolean;
}

export class GuestError extends ToolError {
  readonly command: string;
  constructor(command: string, detail: string) {
    super('tool-failed', `The appliance could not ${command}: ${detail}`);
    this.name = 'GuestError';
    this.command = command;
  }
}

const DEFAULT_KVM_TIMEOUT_MS = 20_000;
/** A clean shutdown syncs the appliance's disks; past this it is killed (its writes went to an overlay or are flushed). */
const SHUTDOWN_GRACE_MS = 60_000;

/** Quotes one argument for guestfish's line parser (double quotes, backslash escapes). */
export function quoteGuestfishArg(arg: string): string {
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

interface Pending {
  marker: string;
  resolve: (value: { stdout: string; stderr: string }) => void;
  reject: (error: Error) => void;
}

/** A running guestfish process; each call writes a command plus two markers and waits for both. */
class Guestfish {
  private stdoutBuffer = '';
  private stderrBuffer = '';
  private nextMarker = 0;
  private queue: Pending[] = [];
  private exited: Error | undefined;

  constructor(private readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stdoutBuffer += chunk;
      this.settle();
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrBuffer += chunk;
      this.settle();
    });
    child.stdin!.on('error', () => undefined);
    child.on('exit', (code, signal) => {
      const tail = this.stderrBuffer.trim();
      this.exited = new ToolError('tool-failed', `The libguestfs appliance stopped (${signal ?? `exit code ${code}`})${tail ? `: ${tail}` : ''}`);
      for (const pending of this.queue.splice(0)) pending.reject(this.exited);
    });
  }

  private settle(): void {
    const head = this.queue[0];
    if (!head) return;
    const outLine = `${head.marker}\n`;
    const errLine = `${head.marker}: unknown command\n`;
    const outAt = this.stdoutBuffer.indexOf(outLine);
    const errAt = this.stderrBuffer.indexOf(errLine);
    if (outAt < 0 || errAt < 0) return;
    const stdout = this.stdoutBuffer.slice(0, outAt);
    const stderr = this.stderrBuffer.slice(0, errAt);
    this.stdoutBuffer = this.stdoutBuffer.slice(outAt + outLine.length);
    this.stderrBuffer = this.stderrBuffer.slice(errAt + errLine.length);
    this.queue.shift();
    head.resolve({ stdout, stderr });
    this.settle();
  }

  send(line: string): Promise<{ stdout: string; stderr: string }> {
    if (this.exited) return Promise.reject(this.exited);
    const marker = `__prl_mark_${this.nextMarker++}`;
    return new Promise((resolve, reject) => {
      this.queue.push({ marker, resolve, reject });
      // The leading '-' keeps guestfish going after an error; the unknown command and the echo mark the end
      // of this command's output on stderr and stdout.
      this.child.stdin!.write(`-${line}\n-${marker}\necho ${marker}\n`);
    });
  }

  /** Ends guestfish (and with it the appliance); killed if it has not gone within `graceMs`. */
  async quit(graceMs: number): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => killGroup(this.child), graceMs);
    try {
      await this.send('shutdown');
    } catch {
      // Already gone, or killed by the timer.
    }
    this.child.stdin!.end('exit\n');
    await gone;
    clearTimeout(timer);
  }

  kill(): void {
    killGroup(this.child);
  }
}

export interface LaunchOptions {
  /** Reported when the appliance falls back to TCG (shown under -v). */
  onNotice?: (message: string) => void;
}

export class GuestSession {
  private closed = false;
  private readonly unregister: () => void;

  private constructor(private readonly fish: Guestfish, readonly accel: Accel) {
    this.unregister = onExit(() => this.close());
    // An interrupted command must not wait for a long guest call: the changes live in an overlay or are
    // rolled back, so killing the appliance is safe.
    cancellation.addEventListener('abort', () => this.fish.kill(), { once: true });
  }

  /** Starts the appliance with these drives (/dev/sda, /dev/sdb … in order). */
  static async launch(drives: readonly Drive[], options: LaunchOptions = {}): Promise<GuestSession> {
    const forced = process.env.LIBGUESTFS_BACKEND_SETTINGS?.includes('force_tcg');
    const first: Accel = forced ? 'tcg' : (cachedAccel() ?? 'kvm');
    const started = Date.now();
    try {
      const session = await GuestSession.tryLaunch(drives, first);
      if (!forced) rememberAccel(first);
      debug(`appliance started with ${first} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return session;
    } catch (error) {
      if (first === 'tcg' || cancellation.aborted) throw error;
      const notice = `the appliance did not start with KVM (${(error as Error).message.split('\n')[0]}); retrying with TCG`;
      options.onNotice?.(notice);
      debug(notice);
      const session = await GuestSession.tryLaunch(drives, 'tcg');
      rememberAccel('tcg');
      debug(`appliance started with tcg in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return session;
    }
  }

  private static async tryLaunch(drives: readonly Drive[], accel: Accel): Promise<GuestSession> {
    const env: Record<string, string> = {};
    if (accel === 'tcg') env.LIBGUESTFS_BACKEND_SETTINGS = 'force_tcg';
    const fish = new Guestfish(startProcess('guestfish', [], env));
    const kill = (): void => fish.kill();
    cancellation.addEventListener('abort', kill);
    try {
      for (const drive of drives) {
        const args = [drive.path, `format:${drive.format}`, `readonly:${drive.readonly}`];
        if (drive.discard) args.push('discard:enable');
        await GuestSession.check(fish, 'add-drive', args);
      }
      const timeoutMs = accel === 'kvm' ? Number(process.env.PRL_DISK_TOOL_KVM_TIMEOUT_MS ?? DEFAULT_KVM_TIMEOUT_MS) : undefined;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        if (timeoutMs === undefined) return;
        timer = setTimeout(() => {
          fish.kill();
          reject(new ToolError('tool-failed', `no answer within ${timeoutMs / 1000} s`));
        }, timeoutMs);
      });
      try {
        await Promise.race([GuestSession.check(fish, 'run', []), timedOut]);
      } finally {
        clearTimeout(timer);
      }
      return new GuestSession(fish, accel);
    } catch (error) {
      fish.kill();
      throw cancellation.aborted ? cancellation.reason : error;
    } finally {
      cancellation.removeEventListener('abort', kill);
    }
  }

  private static async check(fish: Guestfish, command: string, args: readonly string[]): Promise<string> {
    const { stdout, stderr } = await fish.send([command, ...args.map(quoteGuestfishArg)].join(' '));
    if (stderr.trim().length > 0) {
      throw new GuestError(command, stderr.replace(/^\*stdin\*:\d+: /gm, '').replace(/libguestfs: error: /g, '').trim());
    }
    return stdout;
  }

  /** Runs one guestfish command; resolves with its stdout, rejects with GuestError on failure. */
  async call(command: string, ...args: (string | number | boolean)[]): Promise<string> {
    if (this.closed) throw new ToolError('tool-failed', `The appliance is already shut down (calling ${command}).`);
    const started = Date.now();
    const out = await GuestSession.check(this.fish, command, args.map(String));
    debug(`  guest: ${command} ${args.join(' ')} (${((Date.now() - started) / 1000).toFixed(2)} s)`);
    return out;
  }

  /** Like call, but a failure is returned instead of thrown (probing). */
  async attempt(command: string, ...args: (string | number | boolean)[]): Promise<{ ok: true; out: string } | { ok: false; error: GuestError }> {
    try {
      return { ok: true, out: await this.call(command, ...args) };
    } catch (error) {
      if (error instanceof GuestError) return { ok: false, error };
      throw error;
    }
  }

  /** Syncs and shuts the appliance down; safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unregister();
    if (cancellation.aborted) {
      this.fish.kill();
      return;
    }
    await this.fish.quit(SHUTDOWN_GRACE_MS);
  }
}
