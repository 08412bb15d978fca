#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import type { Readable } from 'node:stream';
import tty from 'node:tty';
import { isLoopback, readTokenFile } from '../shared/auth';
import { intOption, parseCommandLine, runMain } from '../shared/cli';
import { ErrorCode, TfsError } from '../shared/errors';
import { count, stderrLogger, writeStderr } from '../shared/log';
import { posix } from '../shared/posix';
import { runCopy } from './copy';
import { Follower } from './follow';
import { Mirror, defaultStatePath } from './mirror';
import { BroadcastSource, WsClientOptions, isWebSocketUrl, repairFrame } from './source';

const HELP = `Usage: tfs-mirror [options] REPLICA

Applies TFS frames from stdin (or a broadcaster) onto directory REPLICA, keeping
its replay cursor in SQLite so that it resumes where it stopped. Nothing outside
REPLICA is ever created, changed or followed, whatever the stream says.

Options:
  --from SOCKET|URL       follow the broadcaster listening on UNIX socket SOCKET,
                          or at ws://HOST:PORT/ or wss://HOST:PORT/; when the
                          connection goes away, reconnect and resume after the
                          last frame applied
  --token-file FILE       the broadcaster's token (WebSocket; mode 0600); a
                          refusal (HTTP 401) stops the mirror, it is not retried
  --ca FILE               trust this CA, or this self-signed certificate, for wss://
  --insecure-plaintext    send the token over ws:// to another machine (in clear)
  --bootstrap             bring a new or stale replica to the store's state: a
                          snapshot of the store, taken by the journal while
                          programs write, then the live stream (needs --from;
                          REPLICA's content is replaced)
  --bootstrap-with CMD    the same with a copy made by CMD (a shell command, e.g.
                          'rsync -aHAX --inplace host:/store/ REPLICA/'): changes
                          made while it runs are tracked by the journal, and a
                          repair snapshot of exactly those paths follows it
  --reconnect-max N       give up after N failed attempts in a row (default 0:
                          never give up)
  --reconnect-delay MS    the longest wait between attempts (default 10000;
                          waits double from 100 ms)
  --state FILE            cursor database (default: .REPLICA.tfs-mirror.db beside REPLICA)
  --restart               accept a stream from another journal than the cursor's,
                          starting over
  --allow-devices         create character and block device nodes (refused otherwise)
  --preserve-privileges   keep setuid/setgid bits on files and security.capability
                          xattrs (dropped otherwise, with a note)
  --durable               the cursor only ever covers what is on disk (the replica's
                          filesystem is synced before each commit): a power cut then
                          costs nothing. Without it, a run that stopped uncleanly on
                          another boot or mount is refused (TFS_UNCLEAN_STOP)
  -q, --quiet             no progress messages
  -h, --help              this text

SIGINT or SIGTERM stops after the frame being applied, with the cursor recorded:
run the same command again to resume.

Exit status: 0 at the stream's end frame; 3 when the stream is cut off, corrupt,
hostile, asks for something refused, is from another journal, or the frames
the replica needs are no longer retained (bootstrap it again); 1 on other
failures (also when --reconnect-max gives up); 2 on usage errors or when stdin is
a terminal; 130/143 when stopped by SIGINT/SIGTERM.`;

const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * fd 0: a file in 4 MiB reads; a pipe widened to 1 MiB, read as node reads it (without the thread
 * pool, so that a stop is not held up by a read waiting on an idle pipe).
 */
function stdinStream(): Readable {
  const st = fs.fstatSync(0);
  if (st.isFIFO()) posix.setPipeSize(0, 1 << 20);
  if (!st.isFile()) return process.stdin;
  return fs.createReadStream('', { fd: 0, highWaterMark: 4 << 20, autoClose: false });
}

/** --token-file and --ca for a ws:// or wss:// --from; a token is never sent in clear to another machine unless told. */
function clientOptions(from: string, values: { 'token-file'?: string; ca?: string; 'insecure-plaintext'?: boolean }): WsClientOptions {
  if (!isWebSocketUrl(from)) {
    if (values['token-file'] !== undefined || values.ca !== undefined) throw new TfsError(ErrorCode.USAGE, '--token-file and --ca are for a broadcaster at ws:// or wss:// URL');
    return {};
  }
  let url: URL;
  try {
    url = new URL(from);
  } catch {
    throw new TfsError(ErrorCode.USAGE, `--from ${from}: not a URL`);
  }
  const token = values['token-file'] === undefined ? undefined : readTokenFile(values['token-file']);
  if (token && url.protocol === 'ws:' && !isLoopback(url.hostname) && !values['insecure-plaintext']) {
    throw new TfsError(ErrorCode.USAGE, `--from ${from}: the token would travel in clear to another machine`, { hint: 'Use wss:// (the broadcaster with --tls-cert/--tls-key), or --insecure-plaintext if that is what you want.' });
  }
  let ca: Buffer | undefined;
  if (values.ca !== undefined) {
    try {
      ca = fs.readFileSync(values.ca);
    } catch (err) {
      throw new TfsError(ErrorCode.USAGE, `--ca ${values.ca}: ${(err as Error).message}`);
    }
  }
  return { token, ca };
}

runMain('tfs-mirror', async () => {
  const { values, positionals } = parseCommandLine(
    HELP,
    {
      from: { type: 'string' },
      state: { type: 'string' },
      restart: { type: 'boolean' },
      'allow-devices': { type: 'boolean' },
      'preserve-privileges': { type: 'boolean' },
      durable: { type: 'boolean' },
      bootstrap: { type: 'boolean' },
      'bootstrap-with': { type: 'string' },
      'reconnect-max': { type: 'string' },
      'reconnect-delay': { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      'token-file': { type: 'string' },
      ca: { type: 'string' },
      'insecure-plaintext': { type: 'boolean' },
    },
    { min: 1, max: 1 },
  );
  if (!values.from && tty.isatty(0)) throw new TfsError(ErrorCode.TTY_INPUT, 'refusing to read frames from a terminal: pipe a stream in (tfs-journal STORE MNT | tfs-mirror REPLICA), or use --from SOCKET');
  const replica = positionals[0]!;
  const log = values.quiet ? () => {} : stderrLogger('tfs-mirror');
  const copyCommand = values['bootstrap-with'];
  if ((values.bootstrap || copyCommand !== undefined) && !values.from) throw new TfsError(ErrorCode.USAGE, '--bootstrap and --bootstrap-with need --from SOCKET: the snapshot is asked of the journal through its broadcaster');
  if (values.bootstrap && copyCommand !== undefined) throw new TfsError(ErrorCode.USAGE, 'give --bootstrap or --bootstrap-with, not both');
  const bootstrap = values.bootstrap ? 'snapshot' : copyCommand !== undefined ? 'hold' : undefined;
  const request = `${os.hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  let copy: Promise<void> | undefined;
  const mirror: Mirror = new Mirror({
    replica,
    state: values.state ?? defaultStatePath(replica),
    restart: values.restart,
    policy: { allowDevices: values['allow-devices'], preservePrivileges: values['preserve-privileges'] },
    durable: values.durable,
    bootstrap,
    request,
    // With --bootstrap-with, the copy starts once the journal tracks what changes (the header is in).
    onHeader: () => {
      if (copyCommand !== undefined && copy === undefined && mirror.mustStartOver) copy = runCopy(copyCommand, log).then(() => {
        log('copy done: asking for the repair of what changed meanwhile');
        if (!follower!.send(repairFrame(request))) log('the connection went away before the repair could be asked for');
      }, (err: unknown) => {
        copyFailed = err;
        follower!.stop();
      });
    },
    log,
  });
  let copyFailed: unknown;
  // Progress while bootstrapping: on a terminal, one line redrawn every second; else a line every 5 s.
  const onTerminal = process.stderr.isTTY === true;
  const began = Date.now();
  let drawn = false;
  const progress = bootstrap && !values.quiet ? setInterval(() => {
    if (!mirror.isBootstrapping) {
      if (drawn) writeStderr('\n');
      drawn = false;
      return;
    }
    const p = mirror.progress;
    const secs = Math.max((Date.now() - began) / 1000, 0.001);
    const line = `bootstrapping: ${p.entries} entries, ${(p.bytes / 1048576).toFixed(1)} MiB copied (${(p.bytes / 1048576 / secs).toFixed(1)} MiB/s), ${mirror.appliedCount} frames applied${mirror.dropped ? `, ${mirror.dropped} dropped while waiting for the snapshot` : ''}, ${secs.toFixed(0)} s`;
    if (onTerminal) {
      writeStderr(`\r\x1b[Ktfs-mirror: ${line}`);
      drawn = true;
    } else log(line);
  }, Number(process.env['TFS_PROGRESS_MS'] ?? (onTerminal ? 1000 : 5000))) : undefined;
  progress?.unref();
  const from = values.from;
  const wsOptions = from === undefined ? {} : clientOptions(from, values);
  const follower = from
    ? new Follower(mirror, (hello) => BroadcastSource.connect(from, hello, wsOptions), {
        maxAttempts: intOption(values['reconnect-max'], 'reconnect-max', 0),
        maxDelayMs: intOption(values['reconnect-delay'], 'reconnect-delay', 10_000, 100),
        log,
      })
    : undefined;
  // stdin in large reads (a 64 KiB pipe would cost a read, and a wake-up, per 64 KiB).
  const input = follower ? undefined : stdinStream();
  let stoppedBy: keyof typeof SIGNAL_EXIT | undefined;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stoppedBy) process.exit(SIGNAL_EXIT[signal]);
      stoppedBy = signal;
      // Ends the input: the mirror finishes the frame in hand, records its cursor and stops.
      if (follower) follower.stop();
      else input!.destroy();
    });
  }
  try {
    const result = follower ? await follower.run() : await mirror.run(input!);
    clearInterval(progress);
    log(`end of stream ${result.streamId}: applied ${count(result.applied, 'frame')}, skipped ${result.skipped} already applied, at #${result.seq}`);
  } catch (err) {
    if (copyFailed !== undefined) throw copyFailed;
    if (!stoppedBy) throw err;
    log(`stopped by ${stoppedBy} after frame #${mirror.position}, cursor recorded; run the same command again to resume`);
    return SIGNAL_EXIT[stoppedBy];
  }
});
