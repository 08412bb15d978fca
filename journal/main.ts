#!/usr/bin/env node
import tty from 'node:tty';
import { ErrorCode, TfsError } from '../shared/errors';
import { parseCommandLine, runMain } from '../shared/cli';
import { startJournal } from './mount';

const HELP = `Usage: tfs-journal [options] STORE MNT

Mounts a FUSE passthrough of directory STORE at MNT and writes every change made
through MNT to stdout as TFS frames (see shared/PROTOCOL.md). Runs until MNT is
unmounted (fusermount -u MNT, or SIGINT/SIGTERM, which unmount first), then writes
the end frame and exits 0.

Options:
  --allow-other      let every user use the mount (libfuse allow_other; the kernel
                     checks permissions against the store's modes: default_permissions)
  -o, --option OPT   extra libfuse mount option, verbatim (repeatable)
  -h, --help         this text`;

runMain('tfs-journal', async () => {
  const { values, positionals } = parseCommandLine(HELP, { 'allow-other': { type: 'boolean' }, option: { type: 'string', short: 'o', multiple: true } }, { min: 2, max: 2 });
  if (tty.isatty(1)) throw new TfsError(ErrorCode.TTY_OUTPUT, 'refusing to write binary frames to a terminal: pipe stdout into tfs-mirror, tfs-broadcast or tfs-inspect');
  const log = (m: string) => process.stderr.write(`tfs-journal: ${m}\n`);
  const journal = await startJournal({
    store: positionals[0]!,
    mountpoint: positionals[1]!,
    fd: 1,
    allowOther: values['allow-other'],
    fuseOptions: values.option?.flatMap((o) => o.split(',')),
    log,
  });
  log(`mounted ${positionals[1]} over ${positionals[0]}, stream ${journal.streamId}`);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => journal.stop());
  // A reader that went away must not kill the journal: SIGPIPE is ignored by Node, EPIPE handled by the sink.
  const dropped = await journal.done;
  log(dropped > 0 ? `unmounted; ${dropped} changes were not journaled` : 'unmounted; stream complete');
  process.exit(0);
});
