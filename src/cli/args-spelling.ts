// The long-option spellings the original accepted, rewritten to full names before parsing. The original parsed
// with boost::program_options' default style, which includes allow_guessing: a unique prefix of a long option
// names it (`--resize` is --resize_partition, `--ext` --external, `--inf` --info). It also read a few options
// before the operation word (ProgramOptions.cpp: help, usage, verbose at the top level; comm is accepted the same
// way for vzctl's `--comm NAME`; Command.cpp: info and dry-run for every operation).
import { UsageError } from '../util/errors.js';

/** What the rewrite needs to know of the option table. */
export interface Spelling {
  /** Every long option, and whether it takes a value. */
  all: ReadonlyMap<string, boolean>;
  /** Long options allowed before the operation word. */
  beforeOperation: readonly string[];
  /** The long options an operation word allows (globals included), or undefined for an unknown word. */
  allowedFor(operation: string): readonly string[] | undefined;
}

type Resolution = { name: string } | { ambiguous: string[] } | undefined;

function resolve(given: string, names: readonly string[]): Resolution {
  if (names.includes(given)) return { name: given };
  const matches = names.filter((name) => name.startsWith(given));
  if (matches.length === 1) return { name: matches[0]! };
  return matches.length > 1 ? { ambiguous: matches } : undefined;
}

function ambiguous(given: string, matches: string[]): UsageError {
  const spelled = [...matches].sort().map((name) => `--${name}`);
  return new UsageError(`The option --${given} is ambiguous: it may be ${spelled.slice(0, -1).join(', ')} or ${spelled.at(-1)}; write it out.`);
}

/** `--name[=value]` split, or undefined for anything else (a short option, a positional, a lone `--`). */
function splitLong(token: string): { name: string; value?: string } | undefined {
  if (!token.startsWith('--') || token === '--') return undefined;
  const equals = token.indexOf('=');
  return equals < 0 ? { name: token.slice(2) } : { name: token.slice(2, equals), value: token.slice(equals) };
}

/**
 * Returns argv with every long option written in full. Before the operation word only `beforeOperation` options
 * are resolved; another known option there is an error that says where it goes. After it, a prefix is resolved
 * among the options the operation takes first, then among all (so that the parser can say which operation does
 * not take it). Unknown names are left for the parser to report.
 */
export function spellOut(argv: readonly string[], spelling: Spelling): string[] {
  const out = [...argv];
  let allowed: readonly string[] | undefined;
  for (let index = 0; index < out.length; index++) {
    const token = out[index]!;
    if (token === '--') break;
    const long = splitLong(token);
    if (!long) {
      // The first word that is not an option is the operation (a value never starts with "-", see args.ts).
      if (allowed === undefined && !token.startsWith('-')) allowed = spelling.allowedFor(token) ?? [...spelling.all.keys()];
      continue;
    }
    let found: Resolution;
    if (allowed === undefined) {
      found = resolve(long.name, spelling.beforeOperation);
      if (found === undefined) {
        const elsewhere = resolve(long.name, [...spelling.all.keys()]);
        if (elsewhere && 'name' in elsewhere) {
          throw new UsageError(`The option --${elsewhere.name} must follow the operation word: write the operation (resize, compact, merge or convert) first.`);
        }
      }
    } else {
      found = resolve(long.name, allowed) ?? resolve(long.name, [...spelling.all.keys()]);
    }
    if (found === undefined) continue;
    if ('ambiguous' in found) throw ambiguous(long.name, found.ambiguous);
    out[index] = `--${found.name}${long.value ?? ''}`;
    // Skip the value of `--name value`, so that it is never taken for the operation word.
    const next = out[index + 1];
    if (long.value === undefined && spelling.all.get(found.name) === true && next !== undefined && !next.startsWith('-')) index++;
  }
  return out;
}
