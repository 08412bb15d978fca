import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import Fuse from 'fuse-native';
import { randomBytes } from 'node:crypto';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, MAGIC, PROTOCOL_VERSION } from '../shared/frame';
import { ordered } from './order';
import { FrameSink, Loss } from './sink';
import { Spool, changedSince, defaultSpoolMax } from './spool';
import { ControlServer, defaultControlPath } from './sessions';
import { FrameDecoder } from '../shared/decoder';
import { StreamHeader, decodeOp } from '../shared/ops';
import { FrameEncoder } from '../shared/encoder';
import { SyncPolicy } from '../shared/framelog';
import { opMeta } from '../shared/ops';
import { stderrLogger } from '../shared/log';
import { JournalFs } from './filesystem';

export interface JournalOptions {
  store: string;
  mountpoint: string;
  /** Where frames go (a file descriptor, normally 1). */
  fd: number;
  allowOther?: boolean;
  /** Extra libfuse options, verbatim (checked by `checkFuseOptions`). */
  fuseOptions?: string[];
  /**
   * A new stream over a non-empty STORE begins with a snapshot of it (default true): a new
   * replica following it from the start ends equal to the store. False: changes only.
   */
  snapshot?: boolean;
  /** The control socket (snapshots for late replicas): a path, or false for none. Default: defaultControlPath. */
  control?: string | false;
  /** The spool: every frame is kept in this frame log too, and a stream found there goes on. */
  spool?: string;
  /** The spool's bound (default: defaultSpoolMax). */
  spoolMax?: number;
  sync?: SyncPolicy;
  log?: (message: string) => void;
}

/** A running journal: a mounted passthrough whose changes stream out as frames. */
export interface RunningJournal {
  streamId: string;
  /** Unmounts (lazily, like fusermount -uz); `done` settles once the end frame is written. */
  stop(): void;
  /** Settles once the mount is gone and the end frame written: with the frames the reader missed, or null. */
  done: Promise<Loss | null>;
}

/** The largest write request libfuse 2.9 negotiates with big_writes. */
export const MAX_WRITE = 128 * 1024;

/** Every mountpoint of this process's mount namespace (the kernel octal-escapes spaces and the like). */
export function mountPoints(): string[] {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => (line.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))));
}

/** Clears a mount left at `mountpoint` by a crashed run (ENOTCONN), and refuses a live one. */
export function clearStaleMount(mountpoint: string, log: (m: string) => void): void {
  const target = path.resolve(mountpoint);
  if (!mountPoints().includes(target)) return;
  try {
    fs.statSync(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') {
      log(`clearing the dead mount left at ${target} (${code})`);
      execFileSync('fusermount', ['-uz', target], { stdio: 'ignore' });
      return;
    }
    throw err;
  }
  throw new TfsError(ErrorCode.MOUNT_FAILED, `${target} is already a mountpoint in use; unmount it first`);
}

/** libfuse options TFS refuses, and why. */
const REFUSED_OPTIONS: [RegExp, string][] = [
  [/^auto_unmount$/, 'auto_unmount would let writes through MNT land in the bare mountpoint directory if the journal died; without it they fail with ENOTCONN, and the next start clears the dead mount'],
  [/^(uid|gid|umask)=/, 'it would show owners or modes the store does not have, and with allow_other the kernel would check access against them; the mount shows the store\'s own, and --allow-other lets other users in as themselves'],
];

/**
 * Checks raw libfuse options: refuses the ones that would lose writes or let anyone in, and turns
 * allow_other or allow_root, however asked for, into --allow-other (access checked by the kernel
 * for each caller against the store's modes and owners, new entries owned by their creator).
 */
export function checkFuseOptions(options: string[]): { options: string[]; allowOther: boolean } {
  let allowOther = false;
  const kept: string[] = [];
  for (const option of options.map((o) => o.trim()).filter((o) => o.length > 0)) {
    for (const [pattern, why] of REFUSED_OPTIONS) {
      if (pattern.test(option)) throw new TfsError(ErrorCode.USAGE, `-o ${option} is refused: ${why}`);
    }
    if (option === 'allow_other' || option === 'allow_root') allowOther = true;
    if (option !== 'allow_other' && option !== 'default_permissions') kept.push(option);
  }
  return { options: kept, allowOther };
}

/** Whether `inner` is `outer` or lies inside it (real paths). */
function within(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer + '/') || outer === '/';
}

/** Checks STORE and MNT before anything is mounted; returns their real paths. */
function checkPaths(storeArg: string, mountArg: string, log: (m: string) => void): { store: string; mountpoint: string } {
  const isDir = (p: string, what: string): void => {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch (err) {
      throw new TfsError(ErrorCode.MOUNT_FAILED, `${what} ${p}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`, { cause: err });
    }
    if (!st.isDirectory()) throw new TfsError(ErrorCode.MOUNT_FAILED, `${what} ${p} is not a directory`);
  };
  isDir(storeArg, 'STORE');
  clearStaleMount(mountArg, log);
  isDir(mountArg, 'MNT');
  // Real paths: a symlink must not hide that one lies inside the other (every call would loop back).
  const store = fs.realpathSync(storeArg);
  const mountpoint = fs.realpathSync(mountArg);
  if (within(store, mountpoint) || within(mountpoint, store)) {
    throw new TfsError(ErrorCode.MOUNT_FAILED, `STORE ${store} and MNT ${mountpoint} (real paths) must not contain each other`);
  }
  return { store, mountpoint };
}

/**
 * Opens the spool. A spool that holds a stream is continued only if nothing changed on STORE after
 * its last frame (no entry's ctime is later): such a change is in no frame, and no replica could
 * ever see it.
 */
function openSpool(options: JournalOptions, store: string, mountpoint: string, log: (m: string) => void): Spool {
  fs.mkdirSync(options.spool!, { recursive: true, mode: 0o700 });
  const dir = fs.realpathSync(options.spool!);
  if (within(dir, store) || within(dir, mountpoint)) throw new TfsError(ErrorCode.USAGE, `the spool ${dir} must lie outside STORE and MNT`);
  const spool = Spool.open(dir, { maxBytes: options.spoolMax ?? defaultSpoolMax(dir), sync: options.sync, log });
  const last = spool.lastAppendNs();
  if (spool.header !== null && last !== null) {
    const changed = changedSince(store, last);
    if (changed !== null) {
      spool.close();
      throw new TfsError(ErrorCode.STORE_CHANGED, `STORE changed after the last frame of the stream spooled in ${dir} (${changed === '' ? 'its root' : JSON.stringify(changed)}, and maybe more): no frame carries that change, so the stream cannot go on`, {
        hint: `Start a new stream (move ${dir} away, or give another --spool), and bring the replicas to the store's state with a copy.`,
      });
    }
  }
  return spool;
}

/** Mounts the journal and starts streaming. Resolves once the mount is up; writes nothing before. */
export async function startJournal(options: JournalOptions): Promise<RunningJournal> {
  const log = options.log ?? stderrLogger('tfs-journal');
  const raw = checkFuseOptions(options.fuseOptions ?? []);
  const allowOther = (options.allowOther ?? false) || raw.allowOther;
  const { store, mountpoint } = checkPaths(options.store, options.mountpoint, log);
  // Modes from the kernel already have the caller's umask applied; ours must not mask them again.
  process.umask(0);

  const spool = options.spool === undefined ? undefined : openSpool(options, store, mountpoint, log);
  const sink = new FrameSink(options.fd, log, spool);
  let header = spool?.header ?? null;
  let firstSync = false;
  if (header === null) {
    const streamId = randomBytes(16).toString('hex');
    const empty = fs.readdirSync(store).length === 0;
    firstSync = !empty && options.snapshot !== false;
    const control = options.control === false ? undefined : options.control ?? defaultControlPath(streamId);
    const origin = empty ? 'empty' : firstSync ? 'snapshot' : 'changes';
    header = Buffer.from(new FrameEncoder(0n).encode(FrameType.STREAM_HEADER, opMeta({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId, startNs: BigInt(Date.now()) * 1000000n, firstSeq: 1n, origin, control })));
  }
  const headerOp = decodeOp([...new FrameDecoder().push(header)][0]!) as StreamHeader;
  const streamId = headerOp.streamId;
  if (spool?.header) log(`going on with stream ${streamId} from the spool ${spool.dir}: frames from #${spool.lastSeq + 1n}`);
  let fuse: Fuse | undefined;
  const filesystem = new JournalFs(store, sink, log, () => {
    const c = fuse!.caller();
    return { pid: c.pid, uid: c.uid, gid: c.gid };
  });
  let finish!: (loss: Loss | null) => void;
  const done = new Promise<Loss | null>((resolve) => (finish = resolve));
  const ops = filesystem.operations();
  let control: ControlServer | undefined;
  ops.destroy = () => {
    control?.close();
    filesystem.close();
    sink.emit({ type: FrameType.END, reason: 'unmounted' });
    sink.finish();
    spool?.close();
    finish(sink.loss());
  };
  fuse = new Fuse(mountpoint, ops, {
    timeout: false,
    force: false,
    mkdir: false,
    fsname: `tfs:${store}`,
    subtype: 'tfs',
    allowOther,
    defaultPermissions: allowOther,
    // No auto_unmount: if this process dies, the mount stays and answers ENOTCONN, so that no
    // write can land in the bare mountpoint directory; the next start clears it.
    autoUnmount: false,
    bigWrites: true,
    maxWrite: MAX_WRITE,
    hardRemove: true,
    useIno: true,
    // Hard links are separate kernel inodes under the high-level libfuse API: no attribute caching,
    // so link counts and attributes are right through every name at once.
    attrTimeout: 0,
    entryTimeout: 0,
    negativeTimeout: 0,
    options: raw.options,
  });
  try {
    await new Promise<void>((resolve, reject) =>
      fuse!.mount((err) => (err ? reject(new TfsError(ErrorCode.MOUNT_FAILED, `mounting ${mountpoint} failed: ${err.message}`, { cause: err })) : resolve())),
    );
  } catch (err) {
    filesystem.close();
    spool?.close();
    throw err;
  }
  sink.start(header, spool ? spool.lastSeq + 1n : 1n, spool?.header ? spool.firstUnconfirmed : undefined);
  ordered(() => filesystem.updateNative());
  if (headerOp.control !== undefined) {
    try {
      control = await ControlServer.listen(headerOp.control, filesystem.sessions, log);
    } catch (err) {
      log(`no control socket at ${headerOp.control} (${(err as Error).message}): late replicas cannot ask for a snapshot`);
    }
  }
  if (firstSync) void filesystem.sessions.full();
  let stopping = false;
  return {
    streamId,
    done,
    stop() {
      if (stopping) return;
      stopping = true;
      Fuse.unmount(mountpoint, (err) => {
        if (err) log(`unmounting ${mountpoint} failed: ${err.message}`);
      });
    },
  };
}
