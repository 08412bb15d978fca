#!/usr/bin/env node
import { parseCommandLine, runMain } from '../shared/cli';
import { Mirror, defaultStatePath } from './mirror';
import { helloFrame, socketSource } from './source';

const HELP = `Usage: tfs-mirror [options] REPLICA

Applies TFS frames from stdin (or a broadcaster) onto directory REPLICA, keeping
its replay cursor in SQLite so that it resumes where it stopped.

Options:
  --from SOCKET   read from the broadcaster listening on UNIX socket SOCKET
  --state FILE    cursor database (default: .REPLICA.tfs-mirror.db beside REPLICA)
  --restart       accept a stream from another journal than the cursor's, starting over
  -q, --quiet     no progress messages
  -h, --help      this text

Exit status: 0 at the stream's end frame; 3 when the stream is cut off, corrupt,
hostile or from another journal; 1 on other failures; 2 on usage errors.`;

runMain('tfs-mirror', async () => {
  const { values, positionals } = parseCommandLine(
    HELP,
    { from: { type: 'string' }, state: { type: 'string' }, restart: { type: 'boolean' }, quiet: { type: 'boolean', short: 'q' } },
    { min: 1, max: 1 },
  );
  const replica = positionals[0]!;
  const log = values.quiet ? () => {} : (m: string) => process.stderr.write(`tfs-mirror: ${m}\n`);
  const mirror = new Mirror({ replica, state: values.state ?? defaultStatePath(replica), restart: values.restart, log });
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stdin.destroy();
    });
  }
  const source = values.from ? socketSource(values.from, helloFrame()) : process.stdin;
  const result = await mirror.run(source);
  log(`end of stream ${result.streamId}: applied ${result.applied} frames, skipped ${result.skipped} already applied, at #${result.seq}`);
});
