// Ratios (ours / peer), verdicts against the issue's targets, and their text, markdown and JSON renderings.
import type { Machine } from './machine.js';
import type { Comparison, Side } from './scenarios.js';

export interface Verdict {
  target: string;
  image: string;
  op: string;
  value: string;
  status: 'met' | 'not met' | 'n/a' | 'FAILED';
}

export interface Results {
  date: string;
  scale: string;
  command: string;
  machine: Machine;
  images: { image: string; buildMs: number }[];
  comparisons: Comparison[];
  verdicts: Verdict[];
  failures: { image: string; op: string; side: 'ours' | 'peer'; argv: string[]; exitCode: number | null; tail: string }[];
}

function ratio(ours: number, peer: number): number | undefined {
  return peer > 0 ? ours / peer : undefined;
}

function fmtRatio(r: number | undefined): string {
  if (r === undefined) return '–';
  return r >= 10 ? `${r.toFixed(1)}×` : `${r.toFixed(2)}×`;
}

function fmtSec(s: Side): string {
  return s.ok ? (s.wallMs / 1000).toFixed(1) : 'FAILED';
}

function fmtBytes(n: number): string {
  const MiB = 1024 * 1024;
  if (n >= 1024 * MiB) return `${(n / 1024 / MiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${Math.round(n / 1024)} KiB`;
}

const HEAD = ['image', 'operation', 'peer', 'ours s', 'peer s', 'time', 'ours wrote', 'peer wrote', 'wrote', 'ours extra', 'peer extra', 'freed ours/peer', 'appliances ours/peer'];

function row(c: Comparison): string[] {
  const both = c.ours.ok && c.peerSide.ok;
  const wroteRatio = both && (c.op.startsWith('resize-g') || c.op.startsWith('resize-s') || c.op.startsWith('convert') || c.op === 'merge-external' || c.op === 'compact')
    ? fmtRatio(ratio(c.ours.writeBytes, c.peerSide.writeBytes))
    : '–';
  const freed = c.op === 'compact' ? `${fmtBytes(c.ours.freedBytes)} / ${fmtBytes(c.peerSide.freedBytes)}` : '';
  const starts = c.ours.guestfishStarts !== undefined && c.ours.guestfishStarts !== c.ours.appliances ? ` (log: ${c.ours.guestfishStarts})` : '';
  return [
    `${c.image} (${c.scale})`,
    c.op,
    c.peer,
    fmtSec(c.ours),
    c.peerSide.ok ? fmtSec(c.peerSide) : 'failed',
    both ? fmtRatio(ratio(c.ours.wallMs, c.peerSide.wallMs)) : '–',
    c.ours.ok ? fmtBytes(c.ours.writeBytes) : '–',
    c.peerSide.ok ? fmtBytes(c.peerSide.writeBytes) : '–',
    wroteRatio,
    c.ours.ok ? fmtBytes(c.ours.peakExtraBytes) : '–',
    c.peerSide.ok ? fmtBytes(c.peerSide.peakExtraBytes) : '–',
    freed,
    `${c.ours.appliances}${starts} / ${c.peerSide.appliances}`,
  ];
}

export function verdicts(comparisons: Comparison[], scale: string): Verdict[] {
  const out: Verdict[] = [];
  const judged = (c: Comparison, target: string, value: string, met: boolean): void => {
    // A row whose set-up failed never ran our command: n/a, with the set-up failure listed under the table.
    const setUp = !c.ours.ok && c.ours.steps[0]?.argv.length === 0;
    out.push({ target, image: c.image, op: c.op, value: setUp ? 'set-up failed' : value, status: setUp ? 'n/a' : !c.ours.ok ? 'FAILED' : !c.peerSide.ok ? 'n/a' : met ? 'met' : 'not met' });
  };
  for (const c of comparisons) {
    const t = ratio(c.ours.wallMs, c.peerSide.wallMs) ?? Infinity;
    const w = ratio(c.ours.writeBytes, c.peerSide.writeBytes) ?? Infinity;
    const both = c.ours.ok && c.peerSide.ok;
    const failed = !c.ours.ok ? 'ours failed' : 'peer failed';
    if (c.op === 'resize-grow' || c.op === 'resize-shrink') {
      const label = `in-place resize ≥5× faster than virt-resize, writing <5% of its data${scale === 'full' ? '' : ' (judged on 8 GiB; this is the small scale)'}`;
      judged(c, label, both ? `time ${fmtRatio(t)}, wrote ${(w * 100).toFixed(1)}%` : failed, t <= 0.2 && w < 0.05);
    } else if (c.op === 'compact') {
      const freed = `freed ${fmtBytes(c.ours.freedBytes)} vs ${fmtBytes(c.peerSide.freedBytes)}`;
      judged(c, 'compact frees ≥ virt-sparsify in ≤1.2× its time', both ? `${freed}, time ${fmtRatio(t)}` : `${failed}; ${freed}`, c.ours.freedBytes >= c.peerSide.freedBytes && t <= 1.2);
    } else if (c.op.startsWith('convert') || c.op === 'merge-external') {
      judged(c, 'orchestration overhead ≤10% over the bare qemu-img call', both ? `time ${fmtRatio(t)}` : failed, t <= 1.1);
    }
    out.push({
      target: '≤1 appliance start per command',
      image: c.image,
      op: c.op,
      value: `${c.ours.appliances} (log: ${c.ours.guestfishStarts ?? '?'})`,
      status: !c.ours.ok && c.ours.steps[0]?.argv.length === 0 ? 'n/a' : c.ours.appliances <= 1 && (c.ours.guestfishStarts ?? 0) <= 1 ? 'met' : 'not met',
    });
  }
  return out;
}

export function failures(comparisons: Comparison[]): Results['failures'] {
  const out: Results['failures'] = [];
  for (const c of comparisons) {
    for (const [which, s] of [['ours', c.ours], ['peer', c.peerSide]] as const) {
      const step = s.steps.find((x) => x.exitCode !== 0);
      if (!s.ok && step !== undefined) out.push({ image: c.image, op: c.op, side: which, argv: step.argv, exitCode: step.exitCode, tail: step.tail ?? '' });
    }
  }
  return out;
}

function textTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function renderText(results: Results): string {
  const lines = [textTable([HEAD, ...results.comparisons.map(row)]), '', 'Targets:'];
  for (const v of results.verdicts) if (!(v.target.startsWith('≤1') && v.status === 'met')) lines.push(`  [${v.status}] ${v.image} ${v.op}: ${v.target}: ${v.value}`);
  const starts = results.verdicts.filter((v) => v.target.startsWith('≤1'));
  lines.push(`  appliance starts ≤1 per command: ${starts.filter((v) => v.status === 'met').length}/${starts.length} commands met`);
  for (const f of results.failures) lines.push(`  failure (${f.side}) ${f.image} ${f.op}: exit ${f.exitCode}: ${f.argv.join(' ')}\n    ${f.tail.split('\n').join('\n    ')}`);
  return lines.join('\n') + '\n';
}

function mdRow(cells: string[]): string {
  return `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
}

export function renderMarkdown(results: Results): string {
  const m = results.machine;
  const out = [
    `### Run of ${results.date} (scale: ${results.scale})`,
    '',
    `Command: \`${results.command}\` at commit ${m.gitCommit}.`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM; disk ${m.disk}; kernel ${m.kernel}; ${m.qemu}; ${m.qemuImg}; ${m.libguestfs}; ${m.guestfsTools}; Node ${m.node}; accelerator ${m.accel}. Load average at start ${m.loadAvgStart.join(' ')}, at end ${m.loadAvgEnd?.join(' ') ?? '?'} (other work shared the machine).`,
    '',
    `Images built: ${results.images.map((i) => `${i.image} in ${(i.buildMs / 1000).toFixed(0)} s`).join(', ')}.`,
    '',
    mdRow(HEAD),
    mdRow(HEAD.map(() => '---')),
    ...results.comparisons.map((c) => mdRow(row(c))),
    '',
    'Targets:',
    '',
  ];
  for (const v of results.verdicts) if (!(v.target.startsWith('≤1') && v.status === 'met')) out.push(`- **${v.status}** — ${v.image} ${v.op}: ${v.target}: ${v.value}`);
  const starts = results.verdicts.filter((v) => v.target.startsWith('≤1'));
  out.push(`- appliance starts ≤1 per command: ${starts.filter((v) => v.status === 'met').length} of ${starts.length} commands met`);
  if (results.failures.length > 0) {
    out.push('', 'Failures:', '');
    for (const f of results.failures) out.push(`- ${f.side} ${f.image} ${f.op}: exit ${f.exitCode}: \`${f.argv.join(' ')}\``, '', '  ```', ...f.tail.split('\n').map((l) => `  ${l}`), '  ```');
  }
  return out.join('\n') + '\n';
}
