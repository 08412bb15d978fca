#!/usr/bin/env node
import tty from 'node:tty';
import { parseCommandLine, runMain } from '../shared/cli';
import { FrameDecoder } from '../shared/decoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType } from '../shared/frame';
import { Inspector } from './inspect';

const HELP = `Usage: tfs-inspect [--json] < STREAM

Reads TFS frames on stdin and prints one line per frame: sequence number,
operation, path(s), the file a handle writes to, offset, length, mode, owner,
times, caller.

Options:
  --json       one JSON object per line instead
  -h, --help   this text

Exit status: 0 for a whole stream (header to end frame); 3 when it is empty, cut
off or corrupt (every frame before the fault is printed); 2 on usage errors or
when stdin is a terminal.`;

runMain('tfs-inspect', async () => {
  const { values } = parseCommandLine(HELP, { json: { type: 'boolean' } }, { min: 0, max: 0 });
  if (tty.isatty(0)) throw new TfsError(ErrorCode.TTY_INPUT, 'refusing to read frames from a terminal: pipe or redirect a stream in');
  const decoder = new FrameDecoder();
  const inspector = new Inspector();
  const out: string[] = [];
  const flush = () => {
    if (out.length > 0) process.stdout.write(out.join('\n') + '\n');
    out.length = 0;
  };
  process.stdout.on('error', () => process.exit(0));
  let frames = 0;
  let ended = false;
  try {
    for await (const chunk of process.stdin) {
      for (const frame of decoder.push(chunk as Buffer)) {
        if (frames++ === 0 && frame.type !== FrameType.STREAM_HEADER) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'the input does not begin with a stream header', { seq: frame.seq });
        if (ended) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'frames after the end frame', { seq: frame.seq });
        out.push(values.json ? JSON.stringify(inspector.toJson(frame)) : inspector.describe(frame));
        if (frame.type === FrameType.END) ended = true;
      }
      flush();
    }
    decoder.end();
  } finally {
    flush();
  }
  if (frames === 0) throw new TfsError(ErrorCode.TRUNCATED, 'empty input: no frames');
  if (!ended) throw new TfsError(ErrorCode.TRUNCATED, `the stream is cut off after ${frames} frames, without an end frame`);
});
