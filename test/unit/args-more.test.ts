// More command lines, for the rules args.test.ts leaves open: values that look like operation words, the end of
// options, help and usage after an operation, prefixes that are ambiguous only among all options, and the exact
// messages of the parser's errors.
import { describe, expect, it } from 'vitest';
import { parseCommandLine } from '../../src/cli/args.js';
import { type Spelling, spellOut } from '../../src/cli/args-spelling.js';
import { UsageError } from '../../src/util/errors.js';

const parse = (line: string) => parseCommandLine(line.split(' ').filter(Boolean));

describe('valid command lines', () => {
  it.each([
    // A value is never the operation word, before the operation or after it.
    ['--comm merge resize --hdd d --size 1G', { kind: 'resize', sizeBytes: 2 ** 30 }],
    ['--comm=merge compact --hdd d', { kind: 'compact' }],
    ['--co merge convert --hdd d --plain', { kind: 'convert', target: 'plain' }],
    ['resize --size 2G --hdd merge', { kind: 'resize', hdd: 'merge', sizeBytes: 2 * 2 ** 30 }],
    ['resize --hd merge --si 2G', { kind: 'resize', hdd: 'merge', sizeBytes: 2 * 2 ** 30 }],
    ['merge --hdd resize', { kind: 'merge', hdd: 'resize', external: false, dryRun: false, verbose: false, json: false }],
    // The flags each operation keeps as false unless given.
    ['resize --hdd d --size 1G', { kind: 'resize', resizePartition: false, force: false, dryRun: false, verbose: false, json: false }],
    ['compact --hdd d -v --json', { kind: 'compact', dryRun: false, verbose: true, json: true }],
    ['convert --hdd d --expanding -n', { kind: 'convert', target: 'expanding', dryRun: true }],
    ['convert --hdd d --plain', { kind: 'convert', target: 'plain', dryRun: false }],
    ['merge --hdd d --external', { kind: 'merge', external: true, dryRun: false }],
    ['resize --hdd d --info --units t', { kind: 'resize-info', units: 'T' }],
    ['resize --hdd d --info --units m', { kind: 'resize-info', units: 'M' }],
    // help and usage win over everything after a known operation.
    ['merge --usage', { kind: 'usage' }],
    ['compact --hdd d --usage', { kind: 'usage' }],
    ['convert --help --plain', { kind: 'help' }],
    ['-h --usage', { kind: 'help' }],
    ['--us', { kind: 'usage' }],
  ])('%s', (line, expected) => {
    expect(parse(line)).toEqual(expect.objectContaining(expected));
  });

  it('gives exactly the fields of each request', () => {
    expect(parse('resize --hdd d --size 1G -n')).toEqual({ kind: 'resize', hdd: 'd', verbose: false, json: false, sizeBytes: 2 ** 30, resizePartition: false, force: false, dryRun: true });
    expect(parse('resize -i --hdd d')).toEqual({ kind: 'resize-info', hdd: 'd', verbose: false, json: false, units: 'M' });
    expect(parse('compact -i --hdd d --json')).toEqual({ kind: 'compact-info', hdd: 'd', verbose: false, json: true });
    expect(parse('-v compact --hdd d')).toEqual({ kind: 'compact', hdd: 'd', verbose: true, json: false, dryRun: false });
    expect(parse('--help')).toEqual({ kind: 'help' });
    expect(parse('--usage')).toEqual({ kind: 'usage' });
  });
});

describe('invalid command lines, with their exact messages', () => {
  it.each([
    ['resize --hdd= --size 1G', 'The option --hdd needs a non-empty path.'],
    ['resize --hdd d --size 1G --e', 'The option --e is ambiguous: it may be --expanding or --external; write it out.'],
    ['--e resize --hdd d', 'Unknown option "--e".'],
    ['--ext resize --hdd d', 'The option --external must follow the operation word: write the operation (resize, compact, merge or convert) first.'],
    // After "--" nothing is an option, and no prefix is spelled out.
    ['resize --hdd d --size 1G -- --forc', 'Unexpected argument "--forc".'],
    // The first word that is not an option is the operation: a short option before it is not, a later word is not.
    ['-v --hdd d resize --size 1G', 'The option --hdd must follow the operation word: write the operation (resize, compact, merge or convert) first.'],
    ['merge extra --e', 'Unexpected argument "extra".'],
    ['resize --hdd d --size 1G --dry-run=1', 'The option --dry-run does not take a value.'],
    ['resize --hdd d --info=yes', 'The option --info does not take a value.'],
    ['merge --hdd d --ext=yes', 'The option --external does not take a value.'],
    ['resize --hdd d -n=1 --size 1G', 'Unknown option "-=".'],
    ['resize -i --hdd d --units', 'The option --units needs a value.'],
    ['resize --hdd d --size -1', 'The option --size needs a value, and a value cannot start with "-".'],
    ['resize --hdd d -i --units -k', 'The option --units needs a value, and a value cannot start with "-".'],
    ['resize --hdd d --size 1G --force --force', 'The option --force is given more than once.'],
    ['resize --hdd d -n --size 1G --dry', 'The option --dry-run (-n) is given more than once.'],
    ['resize --hdd d -v --size 1G -v', 'The option --verbose (-v) is given more than once.'],
    ['merge --hdd d --force', 'The merge operation does not take --force.'],
    ['compact --hdd d -i --units K', 'The compact operation does not take --units.'],
    ['resize --hdd d --info --force', '--force cannot be used with resize --info.'],
    ['resize --hdd d --size 1G --info', '--size cannot be used with resize --info.'],
    ['resize --hdd d --units K', '--units cannot be used with resize --size.'],
    ['compact --hdd d -i -v --force', '--force cannot be used with compact --info.'],
    ['merge', 'The merge operation needs --hdd PATH.'],
    ['convert --plain', 'The convert operation needs --hdd PATH.'],
    ['resize --hdd d -n', 'The resize operation needs --size SIZE (or --info).'],
    ['-v', 'No operation given: the first word must be resize, compact, merge or convert.'],
    ['grow --hdd d', 'Unknown operation "grow": use resize, compact, merge or convert.'],
    ['resize merge --hdd d', 'Unexpected argument "merge".'],
  ])('%s', (line, message) => {
    let thrown: unknown;
    try {
      parse(line);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(UsageError);
    expect((thrown as Error).message).toBe(message);
  });
});

describe('spellOut with an option table of its own', () => {
  const spelling: Spelling = {
    all: new Map([
      ['alpha', false],
      ['alps', true],
      ['alto', false],
      ['beta', true],
    ]),
    beforeOperation: ['beta'],
    allowedFor: (word) => (word === 'op' ? ['alto', 'beta'] : undefined),
  };
  it('names every candidate of an ambiguous prefix, sorted', () => {
    expect(() => spellOut(['other', '--al'], spelling)).toThrow('The option --al is ambiguous: it may be --alpha, --alps or --alto; write it out.');
  });
  it.each([
    // Among the operation's options first: --al is --alto for "op", whatever else starts with it.
    [['op', '--al'], ['op', '--alto']],
    [['--be', 'x', 'op', '--al'], ['--beta', 'x', 'op', '--alto']],
    [['--be=op', 'op', '--al=1'], ['--beta=op', 'op', '--alto=1']],
    [['op', '--alps', 'op2', '--alph'], ['op', '--alps', 'op2', '--alpha']],
    [['op', '--', '--al'], ['op', '--', '--al']],
    [['op', '--unknown', '-x'], ['op', '--unknown', '-x']],
  ])('%j → %j', (argv, spelled) => expect(spellOut(argv, spelling)).toEqual(spelled));
});
