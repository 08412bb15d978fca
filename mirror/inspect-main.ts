#!/usr/bin/env node
import { parseCommandLine, runMain } from '../shared/cli';
import { FrameDecoder } from '../shared/decoder';
import { describeFrame, frameToJson } from './inspect';

const HELP = `Usage: tfs-inspect [--json] < STREAM

Reads TFS frames on stdin and prints one line per frame: sequence number,
operation, path(s), offset, length, mode, owner, times, caller.

Options:
  --json       one JSON object per line instead
  -h, --help   this text`;

runMain('tfs-inspect', async () => {
  const { values } = parseCommandLine(HELP, { json: { type: 'boolean' } }, { min: 0, max: 0 });
  const decoder = new FrameDecoder();
  const out: string[] = [];
  const flush = () => {
    if (out.length > 0) process.stdout.write(out.join('\n') + '\n');
    out.length = 0;
  };
  process.stdout.on('error', () => process.exit(0));
  for await (const chunk of process.stdin) {
    for (const frame of decoder.push(chunk as Buffer)) {
      out.push(values.json ? JSON.stringify(frameToJson(frame)) : describeFrame(frame));
    }
    flush();
  }
  decoder.end();
});
