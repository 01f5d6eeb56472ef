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
  ])('%s', (line, expected) => {
    expect(parse(line)).toMatchObject(expected);
  });
});

describe('invalid command lines', () => {
  it.each([
    ['', /No operation given/],
    ['shrink --hdd d', /Unknown operation "shrink"/],
    ['--hdd d resize --size 1G', /must be the first word/],
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
    ['resize --hdd d --info -n', /--dry-run \(-n\) cannot be used with resize --info/],
    ['compact --hdd d --size 1G', /compact operation does not take --size/],
    ['compact --hdd d --info -n', /cannot be used with compact --info/],
    ['merge --hdd d --plain', /merge operation does not take --plain/],
    ['convert --hdd d', /needs --plain or --expanding/],
    ['convert --hdd d --plain --expanding', /either --plain or --expanding/],
    ['convert --hdd d --info', /convert operation does not take --info/],
    ['resize --hdd d --size 1G --bogus', /Unknown option "--bogus"/],
    ['resize --hdd d --size 1G --force=yes', /--force does not take a value/],
  ])('%s', (line, message) => rejects(line, message));
});
