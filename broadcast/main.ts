#!/usr/bin/env node
import { intOption, parseCommandLine, runMain } from '../shared/cli';
import { ErrorCode, TfsError } from '../shared/errors';
import { stderrLogger } from '../shared/log';
import { Broadcaster, SlowClientPolicy } from './server';

const HELP = `Usage: tfs-broadcast [options] SOCKET < STREAM

Reads TFS frames on stdin and serves them to every client of the UNIX socket
SOCKET, in order: each client gets the stream header, then every frame from the
moment it connected. Frames are forwarded by their length, never interpreted.
Exits 0 after delivering the end frame to every connected client.

Options:
  --min-clients N       hold the stream (throttling the journal) until N clients
                        are connected (default 0)
  --client-buffer BYTES bytes queued for one client before the slow-client policy
                        applies (default 8388608)
  --slow-client POLICY  wait: hold the stream for the slowest client (default);
                        disconnect: drop a client that stays behind
  --slow-client-grace MS  with disconnect: how long a client may stay more than
                        --client-buffer behind before it is dropped (default 2000)
  -h, --help            this text`;

runMain('tfs-broadcast', async () => {
  const { values, positionals } = parseCommandLine(
    HELP,
    { 'min-clients': { type: 'string' }, 'client-buffer': { type: 'string' }, 'slow-client': { type: 'string' }, 'slow-client-grace': { type: 'string' } },
    { min: 1, max: 1 },
  );
  const slowClient = (values['slow-client'] ?? SlowClientPolicy.WAIT) as SlowClientPolicy;
  if (!Object.values(SlowClientPolicy).includes(slowClient)) throw new TfsError(ErrorCode.USAGE, `--slow-client must be wait or disconnect`);
  const log = stderrLogger('tfs-broadcast');
  const broadcaster = new Broadcaster({
    socketPath: positionals[0]!,
    minClients: intOption(values['min-clients'], 'min-clients', 0),
    clientBuffer: intOption(values['client-buffer'], 'client-buffer', 8 * 1024 * 1024, 65536),
    slowClient,
    slowClientGraceMs: intOption(values['slow-client-grace'], 'slow-client-grace', 2000),
    log,
  });
  await broadcaster.listen();
  log(`listening on ${positionals[0]}`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      void broadcaster.close().then(() => process.exit(1));
    });
  }
  await broadcaster.run(process.stdin);
  log('end of stream delivered');
});
