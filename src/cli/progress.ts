// Progress on stderr: a bar on a terminal, "NN %" lines otherwise, NDJSON events under --json.
import cliProgress from 'cli-progress';
import type { Progress } from '../util/progress.js';

export type ProgressStyle = 'bar' | 'lines' | 'ndjson';

export function chooseProgressStyle(json: boolean): ProgressStyle {
  if (json) return 'ndjson';
  return process.stderr.isTTY ? 'bar' : 'lines';
}

export function createProgress(style: ProgressStyle, write: (text: string) => void = (text) => process.stderr.write(text)): Progress {
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
      else {
        bar = new cliProgress.SingleBar(
          { format: `${label} [{bar}] {percentage} %`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
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
