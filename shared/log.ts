import fs from 'node:fs';

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes text to stderr synchronously and never throws: a stderr that is closed, full or a broken
 * pipe (an ssh client gone) must never take a process down, least of all the journal, whose
 * death would take the mount with it. A line that cannot be written is dropped.
 */
export function writeStderr(text: string): void {
  let buf = Buffer.from(text);
  for (let tries = 0; buf.length > 0 && tries < 100; ) {
    try {
      buf = buf.subarray(fs.writeSync(2, buf));
    } catch (err) {
      // stderr shared with a process that made it non-blocking: wait a little for room.
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      tries++;
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
}

/** A command's logger: `name: message` lines on stderr (see writeStderr). */
export function stderrLogger(name: string): (message: string) => void {
  return (message) => writeStderr(`${name}: ${message}\n`);
}

/** "1 frame", "2 frames". */
export function count(n: number | bigint, noun: string): string {
  return `${n} ${noun}${n === 1 || n === 1n ? '' : 's'}`;
}
