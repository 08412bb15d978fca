import fs from 'node:fs';
import type Fuse from 'fuse-native';
import { FrameType } from '../shared/frame';
import { Caller, OpInput, Times } from '../shared/ops';
import { fromFusePath, parentOf } from '../shared/paths';
import { posix } from '../shared/posix';
import { S_IFDIR, S_IFREG, Stat, Tree, fileType, fstat } from '../shared/tree';
import { Sessions } from './sessions';
import { native } from './order';
import { inodeKey } from './snapshot';
import { FrameSink } from './sink';

type Cb = (code: number) => void;
type Tags = { skipIn?: number };
const NO_TAGS: Tags = Object.freeze({});

/** A file the mount has open on the store. Its open travels lazily, on the first change made through it. */
interface OpenFile {
  /** The handle id that frames use (unique within the stream, unlike fds). */
  id: number;
  fd: number;
  /** The store inode (device and number), to find the handles a vanishing name leaves behind. */
  dev: bigint;
  ino: bigint;
  append: boolean;
  /** Whether OPEN has been emitted. */
  announced: boolean;
}

const EIO = -5;
const { O_NOFOLLOW } = fs.constants;
const S_ISGID = 0o2000;
const O_ACCMODE = 3;
const NO_ID = 0xffffffff;

/**
 * The passthrough filesystem: every FUSE operation is applied to the store with a synchronous
 * system call, and every mutation is journaled to the sink before the handler returns. Store calls
 * go through a descriptor of the store (shared/tree.ts) with the path FUSE gave, so a path of
 * PATH_MAX-1 bytes in the mount is one in the store too. The kernel has resolved symlinks before
 * it calls us, so no store call follows a final symlink (O_NOFOLLOW, *at calls without follow):
 * a symlink that appeared behind the kernel's back can never lead outside the store.
 *
 * Order: libfuse runs up to ten worker threads, but fuse-native hands each request to the one
 * JavaScript thread, where handlers run one at a time. A handler performs its store call and
 * writes its frame without yielding (only sync calls), so no other operation can come between
 * the two: the journal's order is exactly the order in which the store saw the operations, for
 * any number of processes using the mount. The one exception is the data path: a WRITE through a
 * handle whose OPEN is out is handled on its libfuse thread, natively (journal/fuse/order.c),
 * under the store-order lock that every JavaScript handler also runs under, so the argument
 * holds with that lock in place of the one thread. While a snapshot session runs or a copy is
 * tracked (both need to see every write), every write comes here (`updateNative`).
 */
export class JournalFs {
  private readonly open = new Map<number, OpenFile>();
  private nextHandle = 1;
  private readonly asRoot = process.geteuid?.() === 0;
  private readonly tree: Tree;
  /** Snapshot sessions (journal/snapshot.ts): while one runs, live frames carry its tags. */
  readonly sessions: Sessions;

  constructor(
    private readonly store: string,
    private readonly sink: FrameSink,
    private readonly log: (message: string) => void,
    private readonly callerOf: () => Caller,
  ) {
    this.tree = new Tree(store, false);
    native.storeRoot(this.tree.fd);
    this.sessions = new Sessions(
      {
        tree: this.tree,
        emit: (op, data) => this.sink.emit(op, data),
        emitted: () => this.sink.lastSeq,
        newHandle: () => this.nextHandle++,
        announcedHandles: (key) => this.announcedHandles(key),
        announcedFiles: () => [...this.open.values()].filter((f) => f.announced).map((f) => ({ id: f.id, key: fileKey(f) })),
        log,
        modeChanged: () => this.updateNative(),
      },
      log,
    );
  }

  /**
   * Lets writes on announced handles bypass JavaScript, or not: only while no snapshot session
   * runs, no copy is tracked, and the sink can take native frames. Called in the store order,
   * whenever one of those changes.
   */
  updateNative(): void {
    native.nativeWrites(this.sink.nativeOk && this.sessions.active === null && !this.sessions.tracking);
  }

  /**
   * Tags for a live change of an open file, or of the entry at `rel` (its lstat when the caller
   * has it), while a snapshot session runs. Nothing is looked up when none runs: this is on the
   * path of every write.
   */
  private fileTags(file: OpenFile, rel?: string): Tags {
    const session = this.sessions.active;
    return session === null ? NO_TAGS : session.changed(fileKey(file), rel);
  }

  private pathTags(rel: string, st?: Stat): Tags {
    const session = this.sessions.active;
    return session === null ? NO_TAGS : session.changed(inodeKey(st ?? this.tree.lstat(rel)), rel);
  }

  /** Announced handles on an inode (for a snapshot's bootstrapping replicas). */
  private announcedHandles(key: string): number[] {
    const out: number[] = [];
    for (const file of this.open.values()) if (file.announced && fileKey(file) === key) out.push(file.id);
    return out;
  }

  private times(rel: string): Times {
    const st = this.tree.lstat(rel);
    return [st.atimeNs, st.mtimeNs];
  }

  private fdTimes(fd: number): Times {
    const st = fstat(fd);
    return [st.atimeNs, st.mtimeNs];
  }

  private parentTimes(p: string): Times {
    return this.times(parentOf(fromFusePath(p)));
  }

  /**
   * Runs a store operation and journals it. A failure of the store call answers the caller with its
   * errno; a failure while journaling is logged loudly but never fails an operation that happened.
   */
  private run(cb: Cb, what: string, act: () => number, journal?: () => void): void {
    let result: number;
    try {
      result = act();
    } catch (err) {
      cb(errnoOf(err, what, this.log));
      return;
    }
    if (journal && result >= 0) this.journal(what, journal);
    cb(result);
  }

  /**
   * Builds and emits the frames of an operation that happened. Once the reader is gone, nothing is
   * built (no stat calls for times): the loss is only counted.
   */
  private journal(what: string, build: () => void): void {
    if (this.sink.broken) return this.sink.skip();
    try {
      build();
    } catch (err) {
      this.log(`JOURNAL INCOMPLETE: ${what} happened on the store but its frame could not be written: ${String(err)}`);
    }
  }

  /** Answers a query (no journaling) with its value, or with the errno it failed with. */
  private answer<T>(cb: (code: number, value?: T) => void, what: string, get: () => T): void {
    let value: T;
    try {
      value = get();
    } catch (err) {
      cb(errnoOf(err, what, this.log));
      return;
    }
    cb(0, value);
  }

  /**
   * Emits a live frame, with the caller. `file`: the open file a handle frame changes, and its
   * current name (null when it has none), for replicas copying the store meanwhile (see track).
   */
  private emit(op: OpInput, data?: Uint8Array, file?: { path: string | null; fd: number }): void {
    (op as { caller?: Caller }).caller = this.callerOf();
    if (this.sessions.tracking) this.trackChange(op, file);
    this.sink.emit(op, data);
  }

  /**
   * A replica is copying the store by other means: the paths this change touched go to its
   * repair. A file with several names changed (its content, its attributes, a new name) makes all
   * its names repaired: the copy has them as one file, which the repair must not split.
   */
  private trackChange(op: OpInput, file?: { path: string | null; fd: number }): void {
    const o = op as { path?: string; from?: string };
    let st: Stat | null = null;
    if (file) st = fstat(file.fd);
    else if (o.path !== undefined && op.type !== FrameType.UNLINK && op.type !== FrameType.RMDIR) st = this.tree.lstatOrNull(o.path);
    const several = st !== null && st.nlink > 1 && fileType(st.mode) !== S_IFDIR;
    this.sessions.touched([o.path, o.from, file?.path], st === null ? undefined : inodeKey(st), several);
  }

  /** Owner of a new entry: the caller, with the group of a setgid parent directory. */
  private chownNew(p: string, caller: Caller): void {
    if (!this.asRoot) return;
    const rel = fromFusePath(p);
    const parent = this.tree.lstat(parentOf(rel));
    const gid = parent.mode & S_ISGID ? parent.gid : caller.gid;
    this.tree.lchown(rel, caller.uid, gid);
  }

  private announce(file: OpenFile, p: string | null): boolean {
    if (file.announced) return true;
    if (p === null) {
      // Cannot happen while every unlink goes through announceBeforeNameGoes; kept as a guard.
      this.log(`a write through handle ${file.id} to a file with no name was not journaled`);
      return false;
    }
    this.emit({ type: FrameType.OPEN, handle: file.id, path: fromFusePath(p), ...this.fileTags(file, fromFusePath(p)) });
    file.announced = true;
    native.handle(file.fd, file.id, file.append, true);
    return true;
  }

  /**
   * A name is about to go (unlink, or a rename over it). Handles to its file that have not been
   * announced yet are announced now, while the name still exists: the file may live on through
   * the open handle or another hard link, and later writes must be able to reach it.
   */
  private announceBeforeNameGoes(p: string): void {
    const st = this.tree.lstatOrNull(fromFusePath(p));
    if (st === null || fileType(st.mode) !== S_IFREG) return;
    for (const file of this.open.values()) if (!file.announced && file.ino === st.ino && file.dev === st.dev) this.announce(file, p);
  }

  private entryCreated(type: typeof FrameType.CREATE | typeof FrameType.MKDIR | typeof FrameType.MKNOD | typeof FrameType.SYMLINK, p: string, extra: { rdev?: number; target?: string }): void {
    const rel = fromFusePath(p);
    const st = this.tree.lstat(rel);
    const common = {
      path: rel,
      uid: Number(st.uid),
      gid: Number(st.gid),
      times: [st.atimeNs, st.mtimeNs] as Times,
      parentTimes: this.parentTimes(p),
      ...(this.sessions.active?.created(rel, inodeKey(st)) ?? {}),
    };
    const mode = Number(st.mode);
    switch (type) {
      case FrameType.CREATE:
        return this.emit({ type, mode, ...common });
      case FrameType.MKDIR:
        return this.emit({ type, mode, ...common });
      case FrameType.MKNOD:
        return this.emit({ type, mode, rdev: extra.rdev ?? 0, ...common });
      case FrameType.SYMLINK:
        return this.emit({ type, target: extra.target ?? '', ...common });
    }
  }

  /** The fuse-native operations object. */
  operations(): Fuse.Operations {
    const operations: Fuse.Operations = {
      init: (cb) => cb(0),
      access: (p, mode, cb) => this.run(cb, 'access', () => (this.tree.access(fromFusePath(p), mode), 0)),
      statfs: (_p, cb) =>
        this.answer(cb, 'statfs', () => {
          const s = fs.statfsSync(this.store);
          return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 };
        }),
      // getattr, fgetattr, readlink, getxattr, listxattr, flush and read are answered natively from
      // the store once mounted (journal/fuse/order.c); these handlers are what they fall back to.
      getattr: (p, cb) => this.answer(cb, 'getattr', () => this.tree.lstat(fromFusePath(p))),
      // The patched channel gives every GETATTR of an open file a handle: answer from the open file.
      fgetattr: (p, fd, cb) => this.answer(cb, 'fgetattr', () => (this.open.has(fd) ? fstat(fd) : this.tree.lstat(fromFusePath(p ?? '/')))),
      readdir: (p, cb) => this.answer(cb, 'readdir', () => this.tree.readdir(fromFusePath(p))),
      readlink: (p, cb) => this.answer(cb, 'readlink', () => this.tree.readlink(fromFusePath(p))),
      getxattr: (p, name, _position, cb) => this.answer(cb, 'getxattr', () => this.tree.getxattr(fromFusePath(p), name)),
      listxattr: (p, cb) => this.answer(cb, 'listxattr', () => this.tree.listxattr(fromFusePath(p))),
      open: (p, flags, cb) => {
        try {
          const fd = this.tree.open(fromFusePath(p), (flags & ~fs.constants.O_CREAT) | O_NOFOLLOW);
          this.track(fd, flags);
          if (flags & fs.constants.O_TRUNC && (flags & O_ACCMODE) !== fs.constants.O_RDONLY) {
            this.journal('open', () => this.journalTruncate(p, 0));
          }
          cb(0, fd);
        } catch (err) {
          cb(errnoOf(err, 'open', this.log));
        }
      },
      create: (p, mode, flags, cb) => {
        try {
          const caller = this.callerOf();
          let fd: number;
          try {
            fd = this.tree.open(fromFusePath(p), flags | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, mode);
          } catch (err) {
            // Two creators raced past the kernel's lookup: for the second, without O_EXCL, it is an open.
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || flags & fs.constants.O_EXCL) throw err;
            return operations.open!(p, flags, cb);
          }
          this.track(fd, flags);
          try {
            this.chownNew(p, caller);
          } catch (err) {
            this.log(`create of ${p}: could not give it to uid ${caller.uid}: ${String(err)}`);
          }
          this.journal('create', () => this.entryCreated(FrameType.CREATE, p, {}));
          cb(0, fd);
        } catch (err) {
          cb(errnoOf(err, 'create', this.log));
        }
      },
      read: (_p, fd, buf, len, pos, cb) => this.run(cb, 'read', () => fs.readSync(fd, buf, 0, len, pos)),
      write: (p, fd, buf, len, pos, cb) => {
        const file = this.open.get(fd);
        if (!file) return cb(-9);
        let offset = pos;
        let written = 0;
        this.run(
          cb,
          'write',
          () => {
            // With O_APPEND the store appends whatever the offset: the frame carries where it landed.
            if (file.append) offset = fs.fstatSync(fd).size;
            return (written = fs.writeSync(fd, buf, 0, len, file.append ? null : pos));
          },
          () => {
            // The buffer belongs to libfuse and is reused after the callback: the frame is written
            // first. It carries what the store took (a short write, e.g. on a full disk).
            if (this.announce(file, p)) this.emit({ type: FrameType.WRITE, handle: file.id, offset, ...this.fileTags(file) }, buf.subarray(0, written), { path: p && fromFusePath(p), fd });
          },
        );
      },
      flush: (_p, _fd, cb) => cb(0),
      // fsync of a directory (after creating or renaming in it) makes the store's directory durable;
      // without this handler the kernel would answer success without syncing anything.
      fsyncdir: (p, datasync, _fd, cb) =>
        this.run(cb, 'fsyncdir', () => {
          const fd = this.tree.open(fromFusePath(p), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | O_NOFOLLOW);
          try {
            if (datasync) fs.fdatasyncSync(fd);
            else fs.fsyncSync(fd);
          } finally {
            fs.closeSync(fd);
          }
          return 0;
        }),
      fsync: (_p, datasync, fd, cb) => {
        const file = this.open.get(fd);
        this.run(
          cb,
          'fsync',
          () => ((datasync ? fs.fdatasyncSync(fd) : fs.fsyncSync(fd)), 0),
          () => {
            if (file?.announced) this.emit({ type: FrameType.FSYNC, handle: file.id, datasync: datasync !== 0, times: this.fdTimes(fd), ...this.fileTags(file) });
          },
        );
      },
      release: (_p, fd, cb) => {
        const file = this.open.get(fd);
        this.open.delete(fd);
        native.handleClosed(fd);
        if (file?.announced) this.journal('release', () => this.emit({ type: FrameType.RELEASE, handle: file.id, times: this.fdTimes(fd), ...this.fileTags(file) }));
        this.run(cb, 'release', () => (fs.closeSync(fd), 0));
      },
      truncate: (p, size, cb) =>
        this.run(
          cb,
          'truncate',
          () => {
            const fd = this.tree.open(fromFusePath(p), fs.constants.O_WRONLY | O_NOFOLLOW);
            try {
              fs.ftruncateSync(fd, size);
            } finally {
              fs.closeSync(fd);
            }
            return 0;
          },
          () => this.journalTruncate(p, size),
        ),
      ftruncate: (p, fd, size, cb) => {
        const file = this.open.get(fd);
        this.run(
          cb,
          'ftruncate',
          () => (fs.ftruncateSync(fd, size), 0),
          () => {
            if (file && this.announce(file, p)) this.emit({ type: FrameType.FTRUNCATE, handle: file.id, size, times: this.fdTimes(fd), ...this.fileTags(file) }, undefined, { path: p && fromFusePath(p), fd });
          },
        );
      },
      // fuse-native's Fuse.UTIME_NOW / UTIME_OMIT (-1n, -2n) are lutimensNs's own sentinels: passed as is.
      utimens: (p, atime, mtime, cb) =>
        this.run(
          cb,
          'utimens',
          () => (this.tree.lutimens(fromFusePath(p), atime, mtime), 0),
          () => this.emit({ type: FrameType.UTIMENS, path: fromFusePath(p), times: this.times(fromFusePath(p)), ...this.pathTags(fromFusePath(p)) }),
        ),
      chmod: (p, mode, cb) =>
        this.run(
          cb,
          'chmod',
          // Linux has no lchmod: a symlink answers EOPNOTSUPP (the kernel never sends one for a symlink).
          () => (this.tree.chmod(fromFusePath(p), mode), 0),
          () => {
            const st = this.tree.lstat(fromFusePath(p));
            this.emit({ type: FrameType.CHMOD, path: fromFusePath(p), mode: st.mode, ...this.pathTags(fromFusePath(p), st) });
          },
        ),
      chown: (p, uid, gid, cb) =>
        this.run(
          cb,
          'chown',
          () => (this.tree.lchown(fromFusePath(p), uid === NO_ID ? -1 : uid, gid === NO_ID ? -1 : gid), 0),
          () => {
            // chown may clear setuid/setgid bits: the frame carries the mode that resulted.
            const st = this.tree.lstat(fromFusePath(p));
            this.emit({ type: FrameType.CHOWN, path: fromFusePath(p), uid: st.uid, gid: st.gid, mode: st.mode, ...this.pathTags(fromFusePath(p), st) });
          },
        ),
      mknod: (p, mode, dev, cb) => {
        const caller = this.callerOf();
        this.run(
          cb,
          'mknod',
          () => (this.tree.mknod(fromFusePath(p), mode, dev), this.chownNew(p, caller), 0),
          () => this.entryCreated(FrameType.MKNOD, p, { rdev: dev }),
        );
      },
      mkdir: (p, mode, cb) => {
        const caller = this.callerOf();
        this.run(
          cb,
          'mkdir',
          () => (this.tree.mkdir(fromFusePath(p), mode), this.chownNew(p, caller), 0),
          () => this.entryCreated(FrameType.MKDIR, p, {}),
        );
      },
      symlink: (target, p, cb) => {
        const caller = this.callerOf();
        this.run(
          cb,
          'symlink',
          () => (this.tree.symlink(target, fromFusePath(p)), this.chownNew(p, caller), 0),
          () => this.entryCreated(FrameType.SYMLINK, p, { target }),
        );
      },
      link: (from, p, cb) =>
        this.run(
          cb,
          'link',
          () => (this.tree.link(fromFusePath(from), fromFusePath(p)), 0),
          () => {
            const tags = this.sessions.active?.linked(fromFusePath(p), inodeKey(this.tree.lstat(fromFusePath(p))), fromFusePath(from)) ?? {};
            this.emit({ type: FrameType.LINK, path: fromFusePath(p), from: fromFusePath(from), parentTimes: this.parentTimes(p), ...tags });
          },
        ),
      unlink: (p, cb) => this.remove(cb, 'unlink', p),
      rmdir: (p, cb) => this.remove(cb, 'rmdir', p),
      rename: (from, p, cb) => {
        // What a running snapshot must know: the two entries as they were before.
        const session = this.sessions.active;
        let before: { source: Stat | null; target: Stat | null } | null = null;
        this.run(
          cb,
          'rename',
          () => {
            if (session) before = { source: this.tree.lstatOrNull(fromFusePath(from)), target: this.tree.lstatOrNull(fromFusePath(p)) };
            this.announceBeforeNameGoes(p);
            this.tree.rename(fromFusePath(from), fromFusePath(p));
            return 0;
          },
          () => {
            let tags: Tags = {};
            const was = before as { source: Stat | null; target: Stat | null } | null;
            if (session && was?.source) {
              const key = inodeKey(was.source);
              // Two names of one file: POSIX rename does nothing.
              const same = was.target !== null && inodeKey(was.target) === key;
              tags = same ? (session.changed(key, fromFusePath(from)), session.changed(key, fromFusePath(p))) : session.renamed(fromFusePath(from), fromFusePath(p), key, was.target);
            }
            this.emit({
              type: FrameType.RENAME,
              from: fromFusePath(from),
              path: fromFusePath(p),
              flags: 0,
              times: this.times(fromFusePath(p)),
              fromParentTimes: this.parentTimes(from),
              parentTimes: this.parentTimes(p),
              ...tags,
            });
          },
        );
      },
      fallocate: (p, fd, mode, offset, length, cb) => {
        const file = this.open.get(fd);
        if (!file) return cb(-9);
        this.run(
          cb,
          'fallocate',
          () => (posix.fallocate(fd, mode, offset, length), 0),
          () => {
            if (this.announce(file, p)) this.emit({ type: FrameType.FALLOCATE, handle: file.id, flags: mode, offset, length, times: this.fdTimes(fd), ...this.fileTags(file) }, undefined, { path: p && fromFusePath(p), fd });
          },
        );
      },
      setxattr: (p, name, value, _position, flags, cb) =>
        this.run(
          cb,
          'setxattr',
          () => (this.tree.setxattr(fromFusePath(p), name, value, flags), 0),
          () => this.emit({ type: FrameType.SETXATTR, path: fromFusePath(p), name, flags, ...this.pathTags(fromFusePath(p)) }, value),
        ),
      removexattr: (p, name, cb) =>
        this.run(
          cb,
          'removexattr',
          () => (this.tree.removexattr(fromFusePath(p), name), 0),
          () => this.emit({ type: FrameType.REMOVEXATTR, path: fromFusePath(p), name, ...this.pathTags(fromFusePath(p)) }),
        ),
    };
    return operations;
  }

  private track(fd: number, flags: number): void {
    const { dev, ino } = fstat(fd);
    const append = (flags & fs.constants.O_APPEND) !== 0;
    const file: OpenFile = { id: this.nextHandle++, fd, dev, ino, append, announced: false };
    this.open.set(fd, file);
    native.handle(fd, file.id, append, false);
  }

  private journalTruncate(p: string, size: number): void {
    const st = this.tree.lstat(fromFusePath(p));
    this.emit({ type: FrameType.TRUNCATE, path: fromFusePath(p), size, times: [st.atimeNs, st.mtimeNs], ...this.pathTags(fromFusePath(p), st) });
  }

  /** unlink and rmdir: a running snapshot learns what goes before it goes. */
  private remove(cb: Cb, what: 'unlink' | 'rmdir', p: string): void {
    const rel = fromFusePath(p);
    const session = this.sessions.active;
    let gone: Stat | null = null;
    this.run(
      cb,
      what,
      () => {
        if (what === 'unlink') this.announceBeforeNameGoes(p);
        if (session) gone = this.tree.lstatOrNull(rel);
        if (what === 'unlink') this.tree.unlink(rel);
        else this.tree.rmdir(rel);
        return 0;
      },
      () => {
        const tags: Tags = session && gone ? session.removing(rel, inodeKey(gone)) : {};
        this.emit({ type: what === 'unlink' ? FrameType.UNLINK : FrameType.RMDIR, path: rel, parentTimes: this.parentTimes(p), ...tags });
        if (session) session.removed(rel, tags.skipIn !== undefined);
      },
    );
  }

  /** Closes every file still open on the store, and the store (after the mount is gone). */
  close(): void {
    this.sessions.close();
    for (const fd of this.open.keys()) {
      native.handleClosed(fd);
      try {
        fs.closeSync(fd);
      } catch {
        // already gone
      }
    }
    this.open.clear();
    native.storeRoot(-1);
    this.tree.close();
  }
}

/** A negative errno for fuse-native. Anything without an errno is a bug: logged, answered with EIO. */
export function errnoOf(err: unknown, what: string, log: (m: string) => void): number {
  const errno = (err as NodeJS.ErrnoException).errno;
  if (typeof errno === 'number' && errno < 0) return errno;
  log(`${what} failed unexpectedly: ${err instanceof Error ? err.stack : String(err)}`);
  return EIO;
}

function fileKey(file: OpenFile): string {
  return `${file.dev}:${file.ino}`;
}
