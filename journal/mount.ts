import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import Fuse from 'fuse-native';
import { randomBytes } from 'node:crypto';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, MAGIC, PROTOCOL_VERSION } from '../shared/frame';
import { FrameSink } from './sink';
import { JournalFs } from './filesystem';

export interface JournalOptions {
  store: string;
  mountpoint: string;
  /** Where frames go (a file descriptor, normally 1). */
  fd: number;
  allowOther?: boolean;
  /** Extra libfuse options, verbatim. */
  fuseOptions?: string[];
  log?: (message: string) => void;
}

/** A running journal: a mounted passthrough whose changes stream out as frames. */
export interface RunningJournal {
  streamId: string;
  /** Unmounts (lazily, like fusermount -uz); `done` settles once the end frame is written. */
  stop(): void;
  /** Settles with the number of frames the reader missed (0 when the stream is whole). */
  done: Promise<number>;
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
      log(`journal: clearing the stale mount at ${target} (${code})`);
      execFileSync('fusermount', ['-uz', target], { stdio: 'ignore' });
      return;
    }
    throw err;
  }
  throw new TfsError(ErrorCode.MOUNT_FAILED, `${target} is already a mountpoint in use; unmount it first`);
}

/** Mounts the journal and starts streaming. Resolves once the mount is up. */
export async function startJournal(options: JournalOptions): Promise<RunningJournal> {
  const log = options.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const store = path.resolve(options.store);
  const mountpoint = path.resolve(options.mountpoint);
  if (!fs.statSync(store).isDirectory()) throw new TfsError(ErrorCode.MOUNT_FAILED, `store ${store} is not a directory`);
  clearStaleMount(mountpoint, log);
  if (!fs.statSync(mountpoint).isDirectory()) throw new TfsError(ErrorCode.MOUNT_FAILED, `mountpoint ${mountpoint} is not a directory`);
  if (store === mountpoint || store.startsWith(mountpoint + '/') || mountpoint.startsWith(store + '/')) {
    throw new TfsError(ErrorCode.MOUNT_FAILED, `store ${store} and mountpoint ${mountpoint} must not contain each other`);
  }
  // Modes from the kernel already have the caller's umask applied; ours must not mask them again.
  process.umask(0);

  const sink = new FrameSink(options.fd, log);
  const streamId = randomBytes(16).toString('hex');
  sink.emit({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId, startNs: BigInt(Date.now()) * 1000000n, firstSeq: 1n });

  let fuse: Fuse | undefined;
  const filesystem = new JournalFs(store, sink, log, () => {
    const c = fuse!.caller();
    return { pid: c.pid, uid: c.uid, gid: c.gid };
  });
  let finish!: (dropped: number) => void;
  const done = new Promise<number>((resolve) => (finish = resolve));
  const ops = filesystem.operations();
  ops.destroy = () => {
    filesystem.closeAll();
    sink.emit({ type: FrameType.END, reason: 'unmounted' });
    if (sink.dropped > 0) log(`journal: ${sink.dropped} changes were not journaled: the stream is incomplete`);
    finish(sink.dropped);
  };
  fuse = new Fuse(mountpoint, ops, {
    timeout: false,
    force: false,
    mkdir: false,
    fsname: `tfs:${store}`,
    subtype: 'tfs',
    allowOther: options.allowOther,
    defaultPermissions: options.allowOther,
    autoUnmount: true,
    bigWrites: true,
    maxWrite: MAX_WRITE,
    hardRemove: true,
    useIno: true,
    // Hard links are separate kernel inodes under the high-level libfuse API: no attribute caching,
    // so link counts and attributes are right through every name at once.
    attrTimeout: 0,
    entryTimeout: 0,
    negativeTimeout: 0,
    options: options.fuseOptions,
  });
  await new Promise<void>((resolve, reject) =>
    fuse!.mount((err) => (err ? reject(new TfsError(ErrorCode.MOUNT_FAILED, `mounting ${mountpoint} failed: ${err.message}`, { cause: err })) : resolve())),
  );
  let stopping = false;
  return {
    streamId,
    done,
    stop() {
      if (stopping) return;
      stopping = true;
      Fuse.unmount(mountpoint, (err) => {
        if (err) log(`journal: unmounting ${mountpoint} failed: ${err.message}`);
      });
    },
  };
}
