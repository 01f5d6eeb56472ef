#!/usr/bin/env node
// prl_disk_tool entry point: argv → request → command → rendered report and exit code.
import { parseCommandLine } from './args.js';
import { HELP, USAGE } from './usage.js';
import { EXIT_CODES, EXIT_INTERNAL, EXIT_OK } from './exit-codes.js';
import { renderJson, renderText } from './render.js';
import { chooseProgressStyle, createProgress } from './progress.js';
import { ToolError } from '../util/errors.js';
import { cancel, runExitActions } from '../util/cancel.js';
import { killAllChildren } from '../util/exec.js';
import { setLogSink, setVerbose } from '../util/log.js';
import { runRequest } from '../commands/index.js';
import type { Report } from '../commands/report.js';

function writeErr(text: string): void {
  process.stderr.write(text);
}

function describeFailure(error: unknown): { code: number; message: string; kind: string; usage: boolean } {
  if (error instanceof ToolError) {
    return { code: EXIT_CODES[error.kind], message: error.message, kind: error.kind, usage: error.showUsage };
  }
  const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return { code: EXIT_INTERNAL, message: `Internal error, please report it: ${message}`, kind: 'internal', usage: false };
}

async function main(argv: readonly string[]): Promise<number> {
  let json = argv.includes('--json');
  try {
    const request = parseCommandLine(argv);
    if (request.kind === 'help') {
      process.stdout.write(HELP);
      return EXIT_OK;
    }
    if (request.kind === 'usage') {
      process.stdout.write(USAGE);
      return EXIT_OK;
    }
    json = request.json;
    setVerbose(request.verbose);
    if (json) setLogSink((line) => writeErr(JSON.stringify({ event: 'log', message: line }) + '\n'));
    const report: Report = await runRequest(request, {
      progress: createProgress(chooseProgressStyle(json)),
      notice: (message) => writeErr(json ? JSON.stringify({ event: 'notice', message }) + '\n' : `${message}\n`),
    });
    await runExitActions((message) => writeErr(`${message}\n`));
    // Every report carries its warnings: in the JSON object, or as lines on stderr.
    if (!json) for (const warning of report.warnings) writeErr(`${warning}\n`);
    process.stdout.write(json ? renderJson(report) + '\n' : renderText(report, request.kind === 'resize-info' ? request.units : 'M'));
    return EXIT_OK;
  } catch (error) {
    await runExitActions((message) => writeErr(`${message}\n`));
    const failure = describeFailure(error);
    writeErr(`${failure.message}\n`);
    if (failure.usage) writeErr(USAGE);
    if (json) process.stdout.write(JSON.stringify({ error: { kind: failure.kind, message: failure.message, exitCode: failure.code } }) + '\n');
    return failure.code;
  }
}

let signalled = false;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (signalled) {
      // A second signal: stop now, without waiting for the rollback.
      killAllChildren();
      process.exit(EXIT_CODES.interrupted);
    }
    signalled = true;
    cancel(signal);
    killAllChildren({ spareUntorn: true });
  });
}

process.exitCode = await main(process.argv.slice(2));
