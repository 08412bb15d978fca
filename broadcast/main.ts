#!/usr/bin/env node
import fs from 'node:fs';
import { choiceOption, durationOption, intOption, parseCommandLine, runMain, sizeOption } from '../shared/cli';
import { SyncPolicy } from '../shared/framelog';
import { stderrLogger } from '../shared/log';
import { Broadcaster, SlowClientPolicy } from './server';

const HELP = `Usage: tfs-broadcast [options] SOCKET < STREAM
       tfs-broadcast --log DIR [options] SOCKET < /dev/null

Serves one TFS stream to every client of the UNIX socket SOCKET (mode 0600), in
order. Each client says which stream it follows and the last frame it has, and
gets every frame after it: from memory while it keeps up, from the frame log
(--log) while it is behind. Frames are forwarded by their length, never
interpreted. Exits 0 once the end frame has reached every client.

With --log DIR, every frame is kept in DIR, and a client can resume from any
frame the log retains. If DIR is the journal's spool (tfs-journal --spool DIR),
the journal writes it and this broadcaster only reads it: each frame is stored
once. When stdin is not a stream (< /dev/null), the log in DIR is served and
followed until its end frame: the way to bring a broadcaster back while the
journal keeps running.

Options:
  --log DIR               keep (or serve) the frame log in DIR
  --retain SIZE           keep at most SIZE of log (e.g. 10G; default: no limit)
  --retain-time DURATION  keep frames for DURATION (e.g. 7d; default: no limit)
  --sync POLICY           when the log is made durable: fsync (default: when the
                          stream carries a program's fsync or its end, and at
                          least every second), always, never
  --min-clients N         hold the stream (throttling the journal) until N clients
                          are connected (default 0)
  --client-buffer BYTES   recent frames held in memory (default 8388608); without
                          a log, how far a client may fall behind
  --slow-client POLICY    without a log: wait: hold the stream for the slowest
                          client (default); disconnect: drop a client that stays
                          behind (it resumes later from its cursor)
  --slow-client-grace MS  with disconnect: how long a client may stay behind
                          before it is dropped (default 2000)
  --linger DURATION       after the end frame, keep serving until no client has
                          connected for DURATION (default 0 for a stream on
                          stdin, 15s when following a log: mirrors that lost
                          their connection come back and get the end)
  --control PATH          the journal's control socket, where late replicas ask
                          for a snapshot (default: the path in the stream header;
                          over ssh, a local socket forwarded to it with
                          ssh -L PATH:REMOTE-PATH)
  -h, --help              this text

Exit status: 0 once the end frame is delivered; 3 when the input is cut off or
not a stream; 1 on other failures; 2 on usage errors.`;

runMain('tfs-broadcast', async () => {
  const { values, positionals } = parseCommandLine(
    HELP,
    {
      log: { type: 'string' },
      retain: { type: 'string' },
      'retain-time': { type: 'string' },
      sync: { type: 'string' },
      'min-clients': { type: 'string' },
      'client-buffer': { type: 'string' },
      'slow-client': { type: 'string' },
      'slow-client-grace': { type: 'string' },
      linger: { type: 'string' },
      control: { type: 'string' },
    },
    { min: 1, max: 1 },
  );
  const log = stderrLogger('tfs-broadcast');
  const broadcaster = new Broadcaster({
    socketPath: positionals[0]!,
    logDir: values.log,
    retain: { maxBytes: sizeOption(values.retain, 'retain'), maxAgeMs: durationOption(values['retain-time'], 'retain-time') },
    sync: choiceOption(values.sync, 'sync', SyncPolicy, SyncPolicy.FSYNC),
    minClients: intOption(values['min-clients'], 'min-clients', 0),
    clientBuffer: intOption(values['client-buffer'], 'client-buffer', 8 * 1024 * 1024, 65536),
    slowClient: choiceOption(values['slow-client'], 'slow-client', SlowClientPolicy, SlowClientPolicy.WAIT),
    slowClientGraceMs: intOption(values['slow-client-grace'], 'slow-client-grace', 2000),
    lingerMs: durationOption(values.linger, 'linger'),
    control: values.control,
    log,
  });
  await broadcaster.listen();
  log(`listening on ${positionals[0]}`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      void broadcaster.close().then(() => process.exit(1));
    });
  }
  // A pipe, a file or a socket carries a stream; anything else (/dev/null, a terminal) means: serve the log.
  const stdin = fs.fstatSync(0);
  const isStream = stdin.isFIFO() || stdin.isFile() || stdin.isSocket();
  await broadcaster.run(isStream ? process.stdin : null);
  log('end of stream delivered');
});
