// Parsers for guestfish's text forms of structs, struct lists, string lists and hashes.
import { ToolError } from '../util/errors.js';

export type Fields = Record<string, string>;

/** `[0] = {\n  key: value\n}` blocks, in order. */
export function parseStructList(text: string): Fields[] {
  const items: Fields[] = [];
  let current: Fields | undefined;
  for (const line of text.split('\n')) {
    if (/^\[\d+\] = \{$/.test(line.trim())) {
      current = {};
      items.push(current);
    } else if (line.trim() === '}') {
      current = undefined;
    } else if (current) {
      const at = line.indexOf(': ');
      if (at > 0) current[line.slice(0, at).trim()] = line.slice(at + 2);
      else if (line.trim().endsWith(':')) current[line.trim().slice(0, -1)] = '';
    }
  }
  return items;
}

/** A single struct or a hash: `key: value` lines. */
export function parseFields(text: string): Fields {
  const fields: Fields = {};
  for (const line of text.split('\n')) {
    const at = line.indexOf(': ');
    if (at > 0) fields[line.slice(0, at).trim()] = line.slice(at + 2);
    else if (line.trim().endsWith(':')) fields[line.trim().slice(0, -1)] = '';
  }
  return fields;
}

export function parseLines(text: string): string[] {
  return text.split('\n').filter((line) => line.length > 0);
}

export function field(fields: Fields, name: string, what: string): string {
  const value = fields[name];
  if (value === undefined) throw new ToolError('tool-failed', `The appliance's answer to ${what} lacks "${name}".`);
  return value;
}

export function intField(fields: Fields, name: string, what: string): number {
  const text = field(fields, name, what);
  if (!/^-?\d+$/.test(text)) throw new ToolError('tool-failed', `The appliance's answer to ${what} has a non-numeric "${name}": ${text}`);
  return Number(text);
}

export function parseInteger(text: string, what: string): number {
  const trimmed = text.trim();
  if (!/^-?\d+$/.test(trimmed)) throw new ToolError('tool-failed', `The appliance's answer to ${what} is not a number: ${trimmed}`);
  return Number(trimmed);
}
