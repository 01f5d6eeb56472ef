#!/usr/bin/env node
// prl_disk_tool entry point: argv → request → command → rendered report and exit code.
import { parseCommandLine } from './args.js';
import { HELP, USAGE } from './usage.js';
import { EXIT_CODES, EXIT_INTERNAL, EXIT_OK } from './exit-codes.js';
import { renderJson, renderText } from './render.js';
import { chooseProgressStyle, createProgress } from './progress.js';
import { writeErr, writeOut } from './output.js';
import { ToolError } from '../util/errors.js';
import { cancel, runExitActions } from '../util/cancel.js';
import { killAllChildren } from '../util/exec.js';
import { setLogSink, setVerbose } from '../util/log.js';
import { runRequest } from '../commands/index.js';
import type { Report } from '../commands/report.js';

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
      writeOut(HELP);
      return EXIT_OK;
    }
    if (request.kind === 'usage') {
      writeOut(USAGE);
      return EXIT_OK;
    }
    json = request.json;
    setVerbose(request.verbose);
    // Text mode keeps stderr for errors: a successful run writes nothing there, since the dispatcher takes any
    // stderr byte as failure (Task_ConvertDisks.cpp). Notices and -v lines go to stdout, where the original's
    // Logger::info wrote too; under --json everything but the report is an NDJSON event on stderr.
    const event = (fields: object): void => writeErr(JSON.stringify(fields) + '\n');
    setLogSink((line) => (json ? event({ event: 'log', message: line }) : writeOut(`${line}\n`)));
    const info = request.kind === 'resize-info' || request.kind === 'compact-info';
    const report: Report = await runRequest(request, {
      progress: createProgress(chooseProgressStyle(json, info)),
      notice: (message) => (json ? event({ event: 'notice', message }) : writeOut(`${message}\n`)),
    });
    await runExitActions((message) => writeErr(`${message}\n`));
    if (json) {
      writeOut(renderJson(report) + '\n');
      return EXIT_OK;
    }
    // Warnings follow the report, before any empty line, as the original printed resize --info's
    // (CommandVm.cpp, ResizeData::print); the dispatcher reads that output only up to its first empty line.
    writeOut(renderText(report, request.kind === 'resize-info' ? request.units : 'M'));
    for (const warning of report.warnings) writeOut(`${warning}\n`);
    return EXIT_OK;
  } catch (error) {
    await runExitActions((message) => writeErr(`${message}\n`));
    const failure = describeFailure(error);
    writeErr(`${failure.message}\n`);
    if (failure.usage) writeErr(USAGE);
    if (json) writeOut(JSON.stringify({ error: { kind: failure.kind, message: failure.message, exitCode: failure.code } }) + '\n');
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
