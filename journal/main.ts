#!/usr/bin/env node
import tty from 'node:tty';
import { ErrorCode, TfsError } from '../shared/errors';
import { choiceOption, parseCommandLine, runMain, sizeOption } from '../shared/cli';
import { SyncPolicy } from '../shared/framelog';
import { count, stderrLogger } from '../shared/log';
import { startJournal } from './mount';

const HELP = `Usage: tfs-journal [options] STORE MNT

Mounts a FUSE passthrough of directory STORE at MNT and writes every change made
through MNT to stdout as TFS frames (see shared/PROTOCOL.md). Nothing is written
before the mount is up. Runs until MNT is unmounted (fusermount -u MNT, or
SIGINT/SIGTERM/SIGHUP, which unmount first), then writes the end frame and exits.

If the reader of stdout goes away, the mount keeps working; with --spool, the
frames go on into the spool and nothing is lost, without it every later change is
counted as lost. If this process dies, the mount stays and answers "Transport
endpoint is not connected" to every call, so that no write lands in the bare
mountpoint directory; the next start clears it.

A new stream over a STORE that already holds files begins with a snapshot of it,
taken while programs use the mount: \`tfs-journal STORE MNT | tfs-mirror REPLICA\`
gives a replica equal to the store. Late replicas ask for a snapshot of their own
through the journal's control socket (tfs-mirror --bootstrap, via tfs-broadcast).

With --spool DIR, every frame is kept in the frame log in DIR as well as written to
stdout; tfs-broadcast --log DIR serves it (only reading it: each frame is stored
once). A journal started again with the same spool over the same STORE goes on with
the same stream (same id, sequence numbers go on), first sending what its previous
reader may not have taken; if STORE changed while no journal was mounted, it
refuses (TFS_STORE_CHANGED) and says what to do.

Options:
  --allow-other      let every user use the mount: the kernel checks each caller's
                     access against the store's modes and owners
                     (default_permissions), and new entries belong to their creator
  -o, --option OPT   extra libfuse mount option, verbatim (repeatable). allow_other
                     or allow_root here means --allow-other; auto_unmount, uid=,
                     gid= and umask= are refused
  --no-snapshot      begin with changes only (the replicas already equal STORE)
  --control PATH     the control socket for late replicas' snapshots (default:
                     /run/tfs/journal-ID.sock for root, else under
                     XDG_RUNTIME_DIR; its path travels in the stream header)
  --spool DIR        keep every frame in the frame log in DIR (outside STORE and MNT)
  --spool-max SIZE   the spool's bound (e.g. 10G; default: the smaller of 4G and
                     half the space free under DIR at start): past it the oldest
                     frames go, loudly if no reader had taken them
  --sync POLICY      when the spool is made durable: fsync (default: when a
                     program fsyncs, at the end, and at least every second),
                     always, never
  -h, --help         this text

Exit status: 0 once unmounted with every change delivered (to the reader or the
spool); 1 if changes were lost (the first lost frame is named), the mount failed,
or STORE changed since the spooled stream's last frame; 2 on usage errors, or
when stdout is a terminal.`;

runMain('tfs-journal', async () => {
  const { values, positionals } = parseCommandLine(
    HELP,
    {
      'allow-other': { type: 'boolean' },
      option: { type: 'string', short: 'o', multiple: true },
      'no-snapshot': { type: 'boolean' },
      control: { type: 'string' },
      spool: { type: 'string' },
      'spool-max': { type: 'string' },
      sync: { type: 'string' },
    },
    { min: 2, max: 2 },
  );
  if (tty.isatty(1)) throw new TfsError(ErrorCode.TTY_OUTPUT, 'refusing to write binary frames to a terminal: pipe stdout into tfs-mirror, tfs-broadcast or tfs-inspect');
  const log = stderrLogger('tfs-journal');
  // Nothing the journal does for its own sake may take the filesystem down: an error outside the
  // handlers (which answer errnos) is logged, and the mount keeps serving.
  process.on('uncaughtException', (err) => log(`internal error, the filesystem keeps working: ${err.stack ?? String(err)}`));
  process.on('unhandledRejection', (err) => log(`internal error, the filesystem keeps working: ${String(err)}`));
  const journal = await startJournal({
    store: positionals[0]!,
    mountpoint: positionals[1]!,
    fd: 1,
    allowOther: values['allow-other'],
    fuseOptions: values.option?.flatMap((o) => o.split(',')),
    snapshot: !values['no-snapshot'],
    control: values.control,
    spool: values.spool,
    spoolMax: sizeOption(values['spool-max'], 'spool-max'),
    sync: choiceOption(values.sync, 'sync', SyncPolicy, SyncPolicy.FSYNC),
    log,
  });
  log(`mounted ${positionals[1]} over ${positionals[0]}, stream ${journal.streamId}`);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => journal.stop());
  const loss = await journal.done;
  if (loss !== null) {
    throw new TfsError(ErrorCode.NOT_DELIVERED, `unmounted; ${count(loss.count, 'change')} made on the store ${loss.count === 1 ? 'was' : 'were'} not delivered: frames from #${loss.firstSeq} on never reached the reader${values.spool ? ' nor stayed in the spool' : ''}`, {
      hint: 'The replicas stop before that frame: bring them to the store\'s state with a copy (see "What is never lost" in the README); --spool keeps the frames when the reader goes away.',
    });
  }
  log('unmounted; every change was delivered');
  process.exit(0);
});
