// The administrator's settings: /etc/prl-disk-tool.conf, or the file PRL_DISK_TOOL_CONFIG names (for tests).
// One `key = value` a line, `#` starts a comment. An unknown key is an error, not ignored: a misspelt security
// setting must not silently leave the default in force.
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { Refused } from './errors.js';

export const DEFAULT_CONFIG_PATH = '/etc/prl-disk-tool.conf';

export interface Config {
  /**
   * Folders a backing file outside the image's folder (a template of linked clones) must lie in; undefined: any
   * folder but the host's pseudo-filesystems. Set but empty: no backing file outside the image's folder at all.
   */
  trustedBackingDirs?: string[];
}

export function configPath(): string {
  return process.env.PRL_DISK_TOOL_CONFIG || DEFAULT_CONFIG_PATH;
}

function invalid(path: string, line: number, why: string): Refused {
  return new Refused(`The configuration file "${path}" is invalid at line ${line}: ${why}; correct it and try again. Nothing was changed.`);
}

export function parseConfig(text: string, path: string): Config {
  const config: Config = {};
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const match = /^([A-Za-z_]+)\s*=\s*(.*)$/.exec(line);
    if (match === null) throw invalid(path, index + 1, 'expected "key = value"');
    const [, key, value] = match as unknown as [string, string, string];
    if (key !== 'trusted_backing_dirs') throw invalid(path, index + 1, `unknown setting "${key}" (known: trusted_backing_dirs)`);
    if (config.trustedBackingDirs !== undefined) throw invalid(path, index + 1, `"${key}" is set twice`);
    const dirs = value.split(':').map((dir) => dir.trim()).filter((dir) => dir !== '');
    for (const dir of dirs) if (!isAbsolute(dir)) throw invalid(path, index + 1, `"${dir}" is not an absolute path`);
    config.trustedBackingDirs = dirs.map((dir) => resolve(dir));
  });
  return config;
}

/** The settings in force; a missing file means the defaults. */
export function loadConfig(): Config {
  const path = configPath();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Refused(`The configuration file "${path}" cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); fix its permissions or remove it. Nothing was changed.`);
  }
  return parseConfig(text, path);
}
