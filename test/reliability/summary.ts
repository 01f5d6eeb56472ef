// The reliability summary: every test file records operations × faults tried, passed and files lost; each file's
// afterAll writes its part beside the others of the same vitest run and prints the table of all parts so far
// (the last file to finish prints the whole suite), also written as JSON to <tmpdir>/prl-reliability-summary.json.
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Row {
  /** e.g. "resize --resize_partition grow", "convert --plain". */
  operation: string;
  format: 'qcow2' | 'ploop' | '-';
  /** e.g. "kill -9", "SIGINT", "disk full", "read-only", "corrupt L1 offset", "lock". */
  fault: string;
  tried: number;
  passed: number;
  /** Files whose content after the fault (and the documented recovery) was not the expected one. */
  lost: number;
  /** Why the cell was not tried (the operation refuses with "not supported" today). */
  skipped?: string;
  /** Kill points that fell after the tool had already finished, and other remarks. */
  note?: string;
  ms: number;
}

export const SUITE_FILES = ['faults-host', 'faults-appliance-qcow2', 'faults-appliance-ploop', 'signals', 'environment', 'bad-input', 'concurrency'];
export const SUMMARY_JSON = join(tmpdir(), 'prl-reliability-summary.json');

/** All files of one vitest run share its main process, the parent of every worker (its pid and start time). */
function runDir(): string {
  let started = '0';
  try {
    const stat = readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    started = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '0';
  } catch {
    // no /proc: the pid alone
  }
  return join(tmpdir(), `prl-reliability-run-${process.ppid}-${started}`);
}

export class Tally {
  readonly rows: Row[] = [];
  constructor(readonly file: string) {}

  add(row: Row): void {
    this.rows.push(row);
  }

  get lost(): number {
    return this.rows.reduce((sum, row) => sum + row.lost, 0);
  }

  /** Writes this file's part, then prints and saves the table of every part of this run found so far. */
  flush(): { rows: Row[]; files: string[] } {
    const dir = runDir();
    mkdirSync(dir, { recursive: true });
    const part = join(dir, `${this.file}.json`);
    writeFileSync(`${part}.tmp`, JSON.stringify(this.rows, null, 2));
    renameSync(`${part}.tmp`, part);
    const files = readdirSync(dir).filter((name) => name.endsWith('.json')).map((name) => name.slice(0, -5)).sort();
    const rows = files.flatMap((name) => JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as Row[]);
    const summary = {
      files,
      complete: SUITE_FILES.every((name) => files.includes(name)),
      full: process.env.PRL_RELIABILITY_FULL === '1',
      tried: rows.reduce((s, r) => s + r.tried, 0),
      passed: rows.reduce((s, r) => s + r.passed, 0),
      lost: rows.reduce((s, r) => s + r.lost, 0),
      rows,
    };
    writeFileSync(SUMMARY_JSON, JSON.stringify(summary, null, 2));
    process.stdout.write(render(summary));
    return { rows, files };
  }
}

function render(summary: { files: string[]; complete: boolean; full: boolean; tried: number; passed: number; lost: number; rows: Row[] }): string {
  const head = ['operation', 'format', 'fault', 'tried', 'passed', 'lost', 'seconds', 'note'];
  const body = summary.rows.map((r) => [r.operation, r.format, r.fault, String(r.tried), String(r.passed), String(r.lost), (r.ms / 1000).toFixed(0), r.skipped ? `skipped: ${r.skipped}` : (r.note ?? '')]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => Math.min(row[i]!.length, i === 7 ? 200 : 60))));
  const line = (cells: string[]): string => cells.map((c, i) => (i >= 3 && i <= 6 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [
    '',
    `Reliability summary (${summary.full ? 'full matrix' : 'default matrix'}; parts: ${summary.files.join(', ')}${summary.complete ? '' : '; more parts still running'})`,
    line(head),
    ...body.map(line),
    `TOTAL tried ${summary.tried}, passed ${summary.passed}, files lost ${summary.lost}`,
    `(written to ${SUMMARY_JSON})`,
    '',
  ].join('\n');
}
