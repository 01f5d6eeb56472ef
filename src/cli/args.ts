// argv → a typed request, with the original's rules: the operation is the first word that is not an option,
// options go anywhere after it (the global ones, --info and --dry-run also before it), each at most once, and a
// unique prefix of a long option names it (args-spelling.ts).
import { parseArgs } from 'node:util';
import { UsageError } from '../util/errors.js';
import { spellOut, type Spelling } from './args-spelling.js';
import { parseSize, parseUnit } from '../util/units.js';
import type { Common, Operation, Request } from '../commands/request.js';

const OPTIONS = {
  hdd: { type: 'string' },
  size: { type: 'string' },
  resize_partition: { type: 'boolean' },
  force: { type: 'boolean' },
  info: { type: 'boolean', short: 'i' },
  units: { type: 'string' },
  'dry-run': { type: 'boolean', short: 'n' },
  external: { type: 'boolean' },
  plain: { type: 'boolean' },
  expanding: { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  comm: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  usage: { type: 'boolean' },
} as const;

type OptionName = keyof typeof OPTIONS;

const GLOBAL: OptionName[] = ['verbose', 'comm', 'json', 'help', 'usage'];
// compact takes --force as the original did (Command.cpp, Traits<Compact>); it weakens no check here either.
const ACCEPTS: Record<Operation, OptionName[]> = {
  resize: ['hdd', 'size', 'resize_partition', 'force', 'info', 'units', 'dry-run'],
  compact: ['hdd', 'force', 'info', 'dry-run'],
  merge: ['hdd', 'external', 'dry-run'],
  convert: ['hdd', 'plain', 'expanding', 'dry-run'],
};

const SPELLING: Spelling = {
  all: new Map(Object.entries(OPTIONS).map(([name, option]) => [name, option.type === 'string'])),
  beforeOperation: [...GLOBAL, 'info', 'dry-run'],
  allowedFor: (word) => (word in ACCEPTS ? [...GLOBAL, ...ACCEPTS[word as Operation]] : undefined),
};

function spell(name: OptionName): string {
  const short = (OPTIONS[name] as { short?: string }).short;
  return short ? `--${name} (-${short})` : `--${name}`;
}

function translateParseError(error: NodeJS.ErrnoException): UsageError {
  const message = error.message;
  const unknown = /Unknown option '([^']+)'/.exec(message);
  if (unknown) return new UsageError(`Unknown option "${unknown[1]}".`);
  const missing = /Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(message);
  if (missing) return new UsageError(`The option ${missing[1]} needs a value.`);
  const ambiguous = /Option '(?:-\w, )?(--[\w-]+)(?: <value>)?' argument is ambiguous/.exec(message);
  if (ambiguous) return new UsageError(`The option ${ambiguous[1]} needs a value, and a value cannot start with "-".`);
  const noValue = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(message);
  if (noValue) return new UsageError(`The option ${noValue[1]} does not take a value.`);
  const positional = /Unexpected argument '([^']+)'/.exec(message);
  if (positional) return new UsageError(`Unexpected argument "${positional[1]}".`);
  return new UsageError(message.split('\n')[0] ?? message);
}

export function parseCommandLine(argv: readonly string[]): Request {
  let parsed;
  try {
    parsed = parseArgs({ args: spellOut(argv, SPELLING), options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (error) {
    throw translateParseError(error as NodeJS.ErrnoException);
  }
  const seen = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== 'option') continue;
    if (seen.has(token.name)) throw new UsageError(`The option ${spell(token.name as OptionName)} is given more than once.`);
    seen.add(token.name);
  }
  const values = parsed.values as Partial<Record<OptionName, string | boolean>>;
  const [operationWord, ...extra] = parsed.positionals;

  if (operationWord === undefined) {
    if (values.help) return { kind: 'help' };
    if (values.usage) return { kind: 'usage' };
    throw new UsageError('No operation given: the first word must be resize, compact, merge or convert.');
  }
  if (!(operationWord in ACCEPTS)) {
    throw new UsageError(`Unknown operation "${operationWord}": use resize, compact, merge or convert.`);
  }
  if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}".`);
  if (values.help) return { kind: 'help' };
  if (values.usage) return { kind: 'usage' };

  const operation = operationWord as Operation;
  for (const name of seen) {
    const option = name as OptionName;
    if (!GLOBAL.includes(option) && !ACCEPTS[operation].includes(option)) {
      throw new UsageError(`The ${operation} operation does not take ${spell(option)}.`);
    }
  }
  const hdd = values.hdd as string | undefined;
  if (hdd === undefined) throw new UsageError(`The ${operation} operation needs --hdd PATH.`);
  if (hdd === '') throw new UsageError('The option --hdd needs a non-empty path.');
  const common: Common = { hdd, verbose: values.verbose === true, json: values.json === true };
  const dryRun = values['dry-run'] === true;
  const info = values.info === true;
  const only = (allowed: OptionName[], context: string): void => {
    for (const name of seen) {
      const option = name as OptionName;
      if (!GLOBAL.includes(option) && option !== 'hdd' && !allowed.includes(option)) {
        throw new UsageError(`${spell(option)} cannot be used with ${context}.`);
      }
    }
  };

  switch (operation) {
    case 'resize': {
      if (info) {
        // -n beside --info changes nothing (--info never writes), as in the original (Command.cpp: dry-run is
        // read for every operation). --resize_partition is what the dispatcher appends to --info when the
        // request carries that flag too (Task_DiskImageResizer.cpp, run_disk_tool); Minimum already covers it.
        only(['info', 'units', 'dry-run', 'resize_partition'], `${operation} --info`);
        return { ...common, kind: 'resize-info', units: values.units === undefined ? 'M' : parseUnit(values.units as string) };
      }
      only(['size', 'resize_partition', 'force', 'dry-run'], 'resize --size');
      if (values.size === undefined) throw new UsageError('The resize operation needs --size SIZE (or --info).');
      return {
        ...common,
        kind: 'resize',
        sizeBytes: parseSize(values.size as string),
        resizePartition: values.resize_partition === true,
        force: values.force === true,
        dryRun,
      };
    }
    case 'compact':
      if (info) {
        only(['info', 'dry-run'], 'compact --info');
        return { ...common, kind: 'compact-info' };
      }
      return { ...common, kind: 'compact', dryRun };
    case 'merge':
      return { ...common, kind: 'merge', external: values.external === true, dryRun };
    case 'convert': {
      if (values.plain === true && values.expanding === true) throw new UsageError('Give either --plain or --expanding, not both.');
      if (values.plain !== true && values.expanding !== true) throw new UsageError('The convert operation needs --plain or --expanding.');
      return { ...common, kind: 'convert', target: values.plain === true ? 'plain' : 'expanding', dryRun };
    }
  }
}
