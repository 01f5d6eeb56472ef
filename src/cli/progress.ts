// Progress: NDJSON events on stderr under --json; otherwise on stdout, where the dispatcher reads it
// (Task_ConvertDisks.cpp takes any stderr byte as failure and parses `\b\d+\b\s*%` from stdout): a bar on a
// terminal, the step's name and "NN %" lines in a pipe, nothing in a pipe for --info (the original printed only
// the report there, and scripts read it by line).
import cliProgress from 'cli-progress';
import type { Progress } from '../util/progress.js';
import { writeErr, writeOut } from './output.js';

export type ProgressStyle = 'bar' | 'lines' | 'ndjson' | 'silent';

export function chooseProgressStyle(json: boolean, info: boolean): ProgressStyle {
  if (json) return 'ndjson';
  if (process.stdout.isTTY) return 'bar';
  return info ? 'silent' : 'lines';
}

export function createProgress(style: ProgressStyle, write: (text: string) => void = style === 'ndjson' ? writeErr : writeOut): Progress {
  let label = '';
  let lastPercent = -1;
  let bar: cliProgress.SingleBar | undefined;
  const finishBar = (): void => {
    bar?.stop();
    bar = undefined;
  };
  return {
    step(next) {
      finishBar();
      label = next;
      lastPercent = -1;
      if (style === 'ndjson') write(JSON.stringify({ event: 'step', step: label }) + '\n');
      else if (style === 'lines') write(`${label}\n`);
      else if (style === 'bar') {
        bar = new cliProgress.SingleBar(
          { format: `${label} [{bar}] {percentage} %`, stream: process.stdout, hideCursor: true, clearOnComplete: false },
          cliProgress.Presets.shades_classic,
        );
        bar.start(100, 0);
      }
    },
    update(fraction) {
      const percent = Math.max(0, Math.min(100, Math.floor(fraction * 100)));
      if (percent === lastPercent) return;
      lastPercent = percent;
      if (style === 'ndjson') write(JSON.stringify({ event: 'progress', step: label, percent }) + '\n');
      else if (style === 'lines') write(`${percent} %\n`);
      else bar?.update(percent);
    },
    done() {
      if (lastPercent !== 100) this.update(1);
      if (style === 'ndjson') write(JSON.stringify({ event: 'done', step: label }) + '\n');
      finishBar();
    },
  };
}
