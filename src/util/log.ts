// Verbose logging on stderr: external commands with their durations, plan steps, decisions.

let verbose = false;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function setVerbose(on: boolean): void {
  verbose = on;
}

/** Redirect log lines (the CLI sends them as NDJSON under --json). */
export function setLogSink(write: (line: string) => void): void {
  sink = write;
}

export function debug(message: string): void {
  if (verbose) sink(message);
}
