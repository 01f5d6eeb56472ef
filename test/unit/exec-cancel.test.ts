// Cancellation of subprocesses (util/exec): an interruption kills an ordinary command's process group, while an
// untorn one (a snapshot deletion) runs to its end and its result stands. Real processes; cancellation is
// process-wide, so this file has it to itself (vitest isolates test files).
import { describe, expect, it } from 'vitest';
import { run } from '../../src/util/exec.js';
import { cancel, isCancelled } from '../../src/util/cancel.js';
import { Interrupted } from '../../src/util/errors.js';

describe('interrupting running commands', () => {
  it('kills an ordinary command at once and lets an untorn one finish with its output', async () => {
    // "At once" is judged by order, not wall time (the machine is shared): the ordinary command, 10 s long, must
    // end before the untorn one, 0.5 s long, has finished.
    const settled: string[] = [];
    const ordinary = run('sh', ['-c', 'sleep 10; echo never']).catch((error: unknown) => error).finally(() => settled.push('ordinary'));
    const step = run('sh', ['-c', 'sleep 0.5; echo finished'], { untorn: true }).finally(() => settled.push('untorn'));
    await new Promise((resolve) => setTimeout(resolve, 100));
    cancel('SIGINT');
    expect(isCancelled()).toBe(true);
    expect(await ordinary).toBeInstanceOf(Interrupted);
    expect(settled).toEqual(['ordinary']);
    expect((await step).stdout).toBe('finished\n');
    expect(settled).toEqual(['ordinary', 'untorn']);
    // Nothing new starts once interrupted, untorn or not.
    await expect(run('true', [], { untorn: true })).rejects.toBeInstanceOf(Interrupted);
  });
});
