// The two output streams, written so that a reader who goes away (`| head -1`) cannot turn a finished change into
// a failure: EPIPE on either stream ends the writing to it, never the command. Node ignores SIGPIPE and reports a
// closed pipe as an 'error' event, which without a listener would end the process with exit 1.
type Stream = NodeJS.WriteStream;

const closed = new WeakSet<Stream>();

function guard(stream: Stream): void {
  // EPIPE is the reader's choice. Any other write error (a full disk behind a redirection) is dropped too: the
  // stream is gone, and the exit code keeps saying what happened to the image.
  stream.on('error', () => closed.add(stream));
}

guard(process.stdout);
guard(process.stderr);

function writer(stream: Stream): (text: string) => void {
  return (text) => {
    if (text === '' || closed.has(stream) || stream.destroyed) return;
    stream.write(text);
  };
}

/** Reports, progress and notices in text mode (the dispatcher reads stdout: Task_ConvertDisks.cpp). */
export const writeOut = writer(process.stdout);
/** Errors, and NDJSON events under --json. */
export const writeErr = writer(process.stderr);
