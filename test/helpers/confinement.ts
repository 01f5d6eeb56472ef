// Runs the built CLI under strace and judges what it touched: every path it (or a child) opened and every socket
// it connected to must be inside the case folder or on the allow-list below; the run is killed, with its whole
// process group, at a hard timeout or as soon as it starts the libguestfs appliance when it must not.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize, resolve } from 'node:path';
import { cliPath } from './cli.js';

/** Fails loudly when strace is missing: the confinement checks are the point of the hostile tests. */
export function requireStrace(): void {
  if (spawnSync('strace', ['-V']).status !== 0) throw new Error('strace is not installed: scripts/setup.sh installs it (Debian package strace); the hostile-image tests cannot run without it');
}

const REPO = resolve(dirname(cliPath()), '..', '..', '..');
/** A git worktree's node_modules is a symlink to the main checkout's, and node opens modules by their real path. */
const MODULES = realpathSync(join(REPO, 'node_modules'));

/**
 * Paths a run may open besides the case folder, and why:
 * - the dynamic loader, shared libraries and the programs themselves: /usr, /lib, /lib64, /bin, /sbin, /etc/ld.so.*;
 * - the tool's own code and dependencies: the repository's dist/ and node_modules/, the package.json files node reads
 *   walking up from them (module type resolution), and node's ICU/OpenSSL data in /usr;
 * - the in-use checks' listing of /proc and /proc/PID/fd (directories only);
 * - what glibc, node and qemu read about the host: /etc/{localtime,nsswitch.conf,passwd,group,host.conf,resolv.conf,
 *   gai.conf,ssl/ (node's CA bundle)}, /proc/self and /proc/<pid> of the run itself, /proc/meminfo, /proc/stat, /proc/cpuinfo,
 *   /proc/sys/..., /sys/devices/system/{cpu,node} (qemu's NUMA probe), /sys/fs/cgroup (node sizes its heap and pool), /sys/block (the
 *   mounted-ploop check), /dev/null, /dev/urandom, /dev/random, /dev/tty (is a terminal attached);
 * - the tool's cache of the KVM outcome (/var/cache/prl-disk-tool or PRL_DISK_TOOL_CACHE_DIR) and the appliance's own
 *   temporary files (/tmp/libguestfs*, /var/tmp/.guestfs-*), for the cases that are allowed to start it.
 * A device, FIFO or file an image names is never on this list: the case folder holds them, or the sentinel does.
 */
const SYSTEM = [
  /^\/(usr|lib|lib64|bin|sbin)\//,
  /^\/etc\/prl-disk-tool\.conf$/,
  /^\/etc\/(ld\.so\.[a-z.]+|localtime|nsswitch\.conf|passwd|group|host\.conf|resolv\.conf|gai\.conf|ssl\/.*|gnutls\/config|qemu\/.*)$/,
  /^\/proc\/(self|thread-self)(\/|$)/,
  /^\/proc\/(meminfo|stat|cpuinfo|filesystems|mounts|sys\/.*)$/,
  /^\/sys\/(devices\/system\/(cpu|node)|fs\/cgroup|block|kernel\/mm\/transparent_hugepage)(\/|$)/,
  /^\/dev\/(null|urandom|random|tty)$/,
  /^\/var\/cache\/prl-disk-tool(\/|$)/,
  /^\/tmp\/libguestfs[^/]*(\/|$)/,
  /^\/var\/tmp\/\.guestfs-\d+(\/|$)/,
];

function allowed(path: string, folder: string, pids: ReadonlySet<string>, extra: readonly string[]): boolean {
  if (path === folder || path.startsWith(`${folder}/`)) return true;
  if (extra.some((e) => path === e || path.startsWith(`${e}/`))) return true;
  if (path.startsWith(`${REPO}/dist/`) || path.startsWith(`${REPO}/node_modules/`) || path.startsWith(`${MODULES}/`)) return true;
  // node walks up from the entry point looking for package.json (ESM "type" lookups).
  if (/\/package\.json$/.test(path) && REPO.startsWith(dirname(path))) return true;
  // The in-use checks list every process's descriptors (readlink of /proc/PID/fd/*, opening none of their targets).
  if (path === '/proc' || /^\/proc\/\d+\/fd$/.test(path)) return true;
  const proc = /^\/proc\/(\d+)(\/|$)/.exec(path);
  if (proc !== null) return pids.has(proc[1]!);
  return SYSTEM.some((rule) => rule.test(path));
}

export interface TraceReport {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Paths opened (or tried) outside the case folder and the allow-list, with the call that did it. */
  outside: string[];
  /** Network or foreign-socket connections. */
  connects: string[];
  /** Programs executed, in order. */
  programs: string[];
  timedOut: boolean;
  /** The libguestfs appliance was started (guestfish executed). */
  appliance: boolean;
}

/** Calls that take a path as their first argument, and those that take a directory fd and a path. */
const PATH_CALLS = new Set(['open', 'stat', 'lstat', 'readlink', 'access']);
const AT_CALLS = new Set(['openat', 'openat2', 'newfstatat', 'statx', 'readlinkat', 'faccessat', 'faccessat2']);
/** Looking a name up (not opening it) is also allowed for the folders above what may be opened (realpath walks them). */
const LOOKUPS = new Set(['stat', 'lstat', 'readlink', 'access', 'newfstatat', 'statx', 'readlinkat', 'faccessat', 'faccessat2']);
const TRACED_CALLS = [...PATH_CALLS, ...AT_CALLS, 'connect', 'execve'].join(',');

function isAncestor(path: string, of: string): boolean {
  return path === '/' || of === path || of.startsWith(`${path}/`);
}

/**
 * Parses strace -f -y -s 4096 output: each path opened, stat'ed, read as a link or checked for access (the stat
 * family counts: looking at an outside path because an image names it is already a probe), connect and execve.
 */
export function judgeTrace(log: string, folder: string, cwd: string, extra: readonly string[] = [], lookups: readonly string[] = []): Pick<TraceReport, 'outside' | 'connects' | 'programs'> {
  const lines = log.split('\n');
  const pids = new Set(lines.map((line) => /^(\d+) /.exec(line)?.[1]).filter((pid): pid is string => pid !== undefined));
  const outside: string[] = [];
  const connects: string[] = [];
  const programs: string[] = [];
  for (const line of lines) {
    const call = /^\d+ +([a-z0-9]+)\((.*)$/.exec(line);
    if (call === null) continue;
    const [, name, rest] = call as unknown as [string, string, string];
    if (name === 'execve') {
      const program = /^"([^"]*)"/.exec(rest)?.[1];
      if (program !== undefined && !/= -1 /.test(line)) programs.push(program);
      continue;
    }
    if (name === 'connect') {
      const unix = /sa_family=AF_UNIX, sun_path=@?"([^"]*)"/.exec(rest);
      if (unix === null) connects.push(line);
      else if (!allowed(normalize(unix[1]!), folder, pids, extra)) connects.push(line);
      continue;
    }
    if (!PATH_CALLS.has(name) && !AT_CALLS.has(name)) continue;
    // open("p", ...), openat(AT_FDCWD, "p", ...), openat(3</dir>, "p", ...)
    const parsed = PATH_CALLS.has(name) ? /^"((?:[^"\\]|\\.)*)"/.exec(rest) : /^([^,]+), "((?:[^"\\]|\\.)*)"/.exec(rest);
    if (parsed === null) continue;
    const raw = PATH_CALLS.has(name) ? parsed[1]! : parsed[2]!;
    // An empty name with AT_EMPTY_PATH is fstat of a descriptor already open: its open was judged.
    if (raw === '') continue;
    const dirfd = PATH_CALLS.has(name) ? 'AT_FDCWD' : parsed[1]!;
    const base = dirfd === 'AT_FDCWD' ? cwd : (/<(.*)>$/.exec(dirfd)?.[1] ?? cwd);
    const path = normalize(isAbsolute(raw) ? raw : join(base, raw));
    // The in-use checks read every process's descriptor links (readlink of /proc/PID/fd/N), opening none of them.
    if (LOOKUPS.has(name) && (lookups.includes(path) || /^\/proc\/\d+\/fd\/\d+$/.test(path) || [folder, ...extra, cliPath(), join(REPO, 'node_modules'), MODULES].some((below) => isAncestor(path, below)))) continue;
    if (!allowed(path, folder, pids, extra)) outside.push(`${path} (${line.slice(0, 300)})`);
  }
  return { outside, connects, programs };
}

export interface TraceOptions {
  /** The folder the image lives in: everything inside it may be opened. */
  folder: string;
  /** Other folders the operation may legitimately read (a linked clone's template folder). */
  extra?: readonly string[];
  /**
   * Outside paths that may be looked at (stat, lstat, readlink) but never opened: what an image names where the
   * rules allow a backing file (a qcow2 path in another folder), found to be a FIFO, socket or folder by lstat.
   */
  lookups?: readonly string[];
  timeoutMs: number;
  /** Kill the run as soon as it executes guestfish (a refusal must come before the appliance). */
  forbidAppliance: boolean;
  logFile: string;
  env?: Record<string, string>;
}

/** Runs the CLI under strace in its own process group; never waits past the timeout. */
export function traceCli(args: readonly string[], options: TraceOptions): Promise<TraceReport> {
  const strace = ['-f', '-qq', '-y', '-s', '4096', '-e', `trace=${TRACED_CALLS}`, '-o', options.logFile, '--', process.execPath, cliPath(), ...args];
  const env = { ...process.env, LC_ALL: 'C', LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg', ...options.env };
  const child = spawn('strace', strace, { cwd: options.folder, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let timedOut = false;
  let appliance = false;
  const killGroup = (): void => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, options.timeoutMs);
  const watch = setInterval(() => {
    if (!options.forbidAppliance || !existsSync(options.logFile)) return;
    if (/execve\("[^"]*guestfish"/.test(readFileSync(options.logFile, 'utf8'))) {
      appliance = true;
      killGroup();
    }
  }, 250);
  return new Promise((resolvePromise, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(watch);
      const log = existsSync(options.logFile) ? readFileSync(options.logFile, 'utf8') : '';
      appliance ||= /execve\("[^"]*guestfish"/.test(log);
      resolvePromise({ code, signal, stdout, stderr, timedOut, appliance, ...judgeTrace(log, options.folder, options.folder, options.extra, options.lookups) });
    });
  });
}
