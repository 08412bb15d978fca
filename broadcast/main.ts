#!/usr/bin/env node
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { choiceOption, durationOption, intOption, parseCommandLine, runMain, sizeOption } from '../shared/cli';
import { SyncPolicy } from '../shared/framelog';
import { stderrLogger } from '../shared/log';
import { ErrorCode, TfsError } from '../shared/errors';
import { isLoopback, readTokenFile } from '../shared/auth';
import { Broadcaster, SlowClientPolicy } from './server';
import { WsListener, WsOptions } from './websocket';

/** --ws and its companions: refused on an address others can reach without a token or TLS, unless told. */
function wsOptions(values: Record<string, string | boolean | undefined>, log: (m: string) => void): WsOptions {
  const spec = values['ws'] as string;
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(spec);
  if (!m || Number(m[2]) > 65535) throw new TfsError(ErrorCode.USAGE, `--ws must be HOST:PORT (e.g. 127.0.0.1:8470 or [::1]:8470), not ${JSON.stringify(spec)}`);
  const host = m[1]!.replace(/^\[|\]$/g, '');
  const token = values['token-file'] === undefined ? undefined : readTokenFile(values['token-file'] as string);
  const cert = values['tls-cert'] as string | undefined;
  const key = values['tls-key'] as string | undefined;
  if ((cert === undefined) !== (key === undefined)) throw new TfsError(ErrorCode.USAGE, '--tls-cert and --tls-key go together');
  let tls: WsOptions['tls'];
  if (cert !== undefined && key !== undefined) {
    try {
      tls = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
    } catch (err) {
      throw new TfsError(ErrorCode.USAGE, `--tls-cert/--tls-key: ${(err as Error).message}`);
    }
  }
  if (!isLoopback(host)) {
    if (!token && !values['insecure-no-token']) {
      throw new TfsError(ErrorCode.USAGE, `--ws ${spec}: other machines can reach this address, and without --token-file anyone could read the stream`, { hint: 'Give --token-file FILE (and the same to each tfs-mirror), or --insecure-no-token if that is what you want.' });
    }
    if (!tls && !values['insecure-plaintext']) {
      throw new TfsError(ErrorCode.USAGE, `--ws ${spec}: other machines can reach this address, and without TLS the token and the stream travel in clear`, { hint: 'Give --tls-cert FILE --tls-key FILE (tfs-mirror then uses wss://, with --ca for a private CA), or --insecure-plaintext if that is what you want.' });
    }
  }
  if (!token) log(`--ws ${spec}: no --token-file: any client that reaches it may read the stream`);
  return { host, port: Number(m[2]), tls, token, ratePerMinute: intOption(values['max-connection-rate'] as string | undefined, 'max-connection-rate', 60, 1), log };
}

/** A group by number, or by name through the system's group database (getent: files, LDAP...). */
function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  try {
    const gid = execFileSync('getent', ['group', name], { encoding: 'utf8' }).split(':')[2];
    if (gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  } catch {
    // not found (getent exits 2)
  }
  throw new TfsError(ErrorCode.USAGE, `--socket-group: no group ${JSON.stringify(name)}`);
}

const HELP = `Usage: tfs-broadcast [options] SOCKET < STREAM
       tfs-broadcast --ws HOST:PORT --token-file FILE [--tls-cert F --tls-key F] [SOCKET] < STREAM
       tfs-broadcast --log DIR [options] SOCKET < /dev/null

Serves one TFS stream to every client of the UNIX socket SOCKET (mode 0600), and
of a WebSocket listener with --ws, in order. Each client says which stream it
follows and the last frame it has, and gets every frame after it: from memory
while it keeps up, from the frame log (--log) while it is behind. Frames are
forwarded by their length; only the stream header's and a snapshot's begin
frame's metadata are read. Exits 0 once the end frame has reached every client.

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
  --socket-group GROUP    members of GROUP may connect to SOCKET too (mode 0660)
  --max-clients N         clients at once, every transport (default 256); one
                          more is refused (TFS_BUSY) and retries later

WebSocket transport (frames as binary messages; see the README's security section):
  --ws HOST:PORT          listen for tfs-mirror --from ws://HOST:PORT/ (or wss://)
  --token-file FILE       clients must present the token in FILE (mode 0600; its
                          first line, 16 characters or more); compared in constant
                          time; a wrong or missing one gets HTTP 401, no frame
  --tls-cert FILE         serve wss:// with this certificate chain (PEM)...
  --tls-key FILE          ...and its private key (PEM)
  --max-connection-rate N new connections per client address per minute (default
                          60); more get HTTP 429
  --insecure-no-token     allow --ws on an address other machines can reach
                          without --token-file (anyone can read the stream)
  --insecure-plaintext    allow --ws on such an address without TLS (the token
                          and the stream travel in clear)
  --handshake-time DURATION  a client must upgrade (TLS, HTTP) and then say HELLO
                          within this time each, or it is dropped (default 10s;
                          the UNIX socket's clients: HELLO)
  Other limits: HTTP request headers 8 KiB; a client's message 64 KiB, its HELLO
  4 KiB; frames 16 MiB; per-client send buffer 256 KiB (then it is served from
  the log, or waited for).

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
      'socket-group': { type: 'string' },
      'max-clients': { type: 'string' },
      ws: { type: 'string' },
      'token-file': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'max-connection-rate': { type: 'string' },
      'insecure-no-token': { type: 'boolean' },
      'insecure-plaintext': { type: 'boolean' },
      'handshake-time': { type: 'string' },
    },
    { min: 0, max: 1 },
  );
  const log = stderrLogger('tfs-broadcast');
  const socketPath = positionals[0];
  const handshakeMs = durationOption(values['handshake-time'], 'handshake-time') ?? 10_000;
  const ws = values.ws === undefined ? undefined : { ...wsOptions(values, log), handshakeMs };
  if (socketPath === undefined && ws === undefined) throw new TfsError(ErrorCode.USAGE, 'give a SOCKET, --ws HOST:PORT, or both', { hint: `${HELP.split('\n')[0]}\nTry --help for more.` });
  const broadcaster = new Broadcaster({
    socketPath,
    socketGroup: values['socket-group'] === undefined ? undefined : groupId(values['socket-group']),
    maxClients: intOption(values['max-clients'], 'max-clients', 256, 1),
    handshakeMs,
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
  if (socketPath !== undefined) log(`listening on ${socketPath}`);
  const listener = ws === undefined ? undefined : await WsListener.start(broadcaster, ws);
  if (listener) log(`listening on ${ws!.tls ? 'wss' : 'ws'}://${values.ws}/ (port ${listener.address.port})${ws!.token ? ', token required' : ''}`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      void broadcaster.close().then(() => listener?.close()).then(() => process.exit(1));
    });
  }
  // A pipe, a file or a socket carries a stream; anything else (/dev/null, a terminal) means: serve the log.
  const stdin = fs.fstatSync(0);
  const isStream = stdin.isFIFO() || stdin.isFile() || stdin.isSocket();
  try {
    await broadcaster.run(isStream ? process.stdin : null);
  } finally {
    await listener?.close();
  }
  log('end of stream delivered');
});
