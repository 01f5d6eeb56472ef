// The command-line rules: every valid form, and every invalid one with its message.
import { describe, expect, it } from 'vitest';
import { parseCommandLine } from '../../src/cli/args.js';
import { UsageError } from '../../src/util/errors.js';

const parse = (line: string) => parseCommandLine(line.split(' ').filter(Boolean));
const rejects = (line: string, message: RegExp) => {
  expect(() => parse(line)).toThrow(UsageError);
  expect(() => parse(line)).toThrow(message);
};

describe('valid command lines', () => {
  it.each([
    ['resize --hdd d --size 10G', { kind: 'resize', hdd: 'd', sizeBytes: 10 * 2 ** 30, resizePartition: false, force: false, dryRun: false }],
    ['resize --hdd=d --size=512 --resize_partition', { kind: 'resize', sizeBytes: 512 * 2 ** 20, resizePartition: true }],
    ['resize -n --hdd d --size 3t --force', { kind: 'resize', sizeBytes: 3 * 2 ** 40, force: true, dryRun: true }],
    ['resize --hdd d -i', { kind: 'resize-info', units: 'M' }],
    ['resize --info --hdd d --units g', { kind: 'resize-info', units: 'G' }],
    ['resize --hdd d --info --units=K --json -v', { kind: 'resize-info', units: 'K', json: true, verbose: true }],
    ['compact --hdd d', { kind: 'compact', dryRun: false }],
    ['compact --hdd d --dry-run', { kind: 'compact', dryRun: true }],
    ['compact -i --hdd d', { kind: 'compact-info' }],
    ['merge --hdd d', { kind: 'merge', external: false }],
    ['merge --hdd d --external -n', { kind: 'merge', external: true, dryRun: true }],
    ['convert --hdd d --plain', { kind: 'convert', target: 'plain' }],
    ['convert --expanding --hdd d --comm vzctl', { kind: 'convert', target: 'expanding' }],
    ['--help', { kind: 'help' }],
    ['-h', { kind: 'help' }],
    ['--usage', { kind: 'usage' }],
    ['resize --help', { kind: 'help' }],
    // Options before the operation, as the original's top-level parser read them (ProgramOptions.cpp).
    ['-v resize --hdd d --size 1G', { kind: 'resize', verbose: true }],
    ['--comm vzctl resize --hdd d --size 1G', { kind: 'resize', sizeBytes: 2 ** 30 }],
    ['--comm=vzctl -v --json compact --hdd d', { kind: 'compact', verbose: true, json: true }],
    ['-i resize --hdd d', { kind: 'resize-info' }],
    ['-n merge --hdd d', { kind: 'merge', dryRun: true }],
    ['--verb --inf resize --hdd d', { kind: 'resize-info', verbose: true }],
    // Unique prefixes of long options (boost's allow_guessing).
    ['resize --hdd d --size 1G --resize', { kind: 'resize', resizePartition: true }],
    ['resize --hd d --si=2G --res --f', { kind: 'resize', hdd: 'd', sizeBytes: 2 * 2 ** 30, resizePartition: true, force: true }],
    ['resize --hdd d --inf --un G', { kind: 'resize-info', units: 'G' }],
    ['merge --hdd d --ext', { kind: 'merge', external: true }],
    ['merge --hdd d --e', { kind: 'merge', external: true }],
    ['convert --hdd d --e', { kind: 'convert', target: 'expanding' }],
    ['convert --hdd d --pl --dry', { kind: 'convert', target: 'plain', dryRun: true }],
    ['compact --hdd d --j', { kind: 'compact', json: true }],
    // compact --force, and -n beside --info: accepted, nothing changes.
    ['compact --hdd d --force', { kind: 'compact', dryRun: false }],
    ['resize --hdd d --info -n', { kind: 'resize-info', units: 'M' }],
    ['compact --hdd d --info --dry-run', { kind: 'compact-info' }],
    // The dispatcher appends --resize_partition to --info when its request carries both flags.
    ['resize --hdd d --info --resize_partition', { kind: 'resize-info' }],
  ])('%s', (line, expected) => {
    expect(parse(line)).toMatchObject(expected);
  });
});

describe('invalid command lines', () => {
  it.each([
    ['', /No operation given/],
    ['shrink --hdd d', /Unknown operation "shrink"/],
    ['--hdd d resize --size 1G', /--hdd must follow the operation word/],
    ['--hd=d resize --size 1G', /--hdd must follow the operation word/],
    ['--size 1G resize --hdd d', /--size must follow the operation word/],
    ['resize --hdd d --size 1G --u M', /--u is ambiguous: it may be --units or --usage/],
    ['resize --h d --size 1G', /--h is ambiguous: it may be --hdd or --help/],
    ['resize --hdd d --size 1G --re --resize_partition', /--resize_partition is given more than once/],
    ['merge --hdd d --hd e', /--hdd is given more than once/],
    ['merge --hdd d --pl', /merge operation does not take --plain/],
    ['compact --hdd d --info --force', /--force cannot be used with compact --info/],
    ['--bogus resize --hdd d', /Unknown option "--bogus"/],
    ['resize --hdd d --size 1G extra', /Unexpected argument "extra"/],
    ['resize --hdd d --hdd e --size 1G', /--hdd is given more than once/],
    ['resize --hdd d --size 1G --size 2G', /--size is given more than once/],
    ['resize --hdd d -i --info', /--info \(-i\) is given more than once/],
    ['resize --hdd', /--hdd needs a value/],
    ['resize --hdd d --size', /--size needs a value/],
    ['resize --hdd d', /needs --size SIZE/],
    ['resize --size 1G', /needs --hdd PATH/],
    ['resize --hdd d --size 1.5G', /Invalid size "1.5G"/],
    ['resize --hdd d --size -1G', /--size needs a value, and a value cannot start/],
    ['resize --hdd --size 1G', /--hdd needs a value, and a value cannot start/],
    ['resize --hdd d --size=-1G', /Invalid size "-1G"/],
    ['resize --hdd d --size +1G', /Invalid size "\+1G"/],
    ['resize --hdd d --size 0', /must not be zero/],
    ['resize --hdd d --size 10P', /Invalid size "10P"/],
    ['resize --hdd d --size 1G --units G', /--units cannot be used with resize --size/],
    ['resize --hdd d --info --size 1G', /--size cannot be used with resize --info/],
    ['resize --hdd d --info --units X', /Invalid unit "X"/],
    ['compact --hdd d --size 1G', /compact operation does not take --size/],
    ['merge --hdd d --plain', /merge operation does not take --plain/],
    ['convert --hdd d', /needs --plain or --expanding/],
    ['convert --hdd d --plain --expanding', /either --plain or --expanding/],
    ['convert --hdd d --info', /convert operation does not take --info/],
    ['resize --hdd d --size 1G --bogus', /Unknown option "--bogus"/],
    ['resize --hdd d --size 1G --force=yes', /--force does not take a value/],
  ])('%s', (line, message) => rejects(line, message));
});
