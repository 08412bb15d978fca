import fs from 'node:fs';
import path from 'node:path';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, frameTypeName } from '../shared/frame';
import { Op, Times } from '../shared/ops';
import { parentOf } from '../shared/paths';
import { Falloc, posix } from '../shared/posix';

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const PERMS = 0o7777;

interface Handle {
  /** Replica path, or null once the file's name is gone (unlinked or replaced while open). */
  path: string | null;
  fd: number | undefined;
}

/** Frame types that only change data or attributes of entries that already exist: safe to apply again as a run. */
const BATCHABLE: ReadonlySet<number> = new Set([
  FrameType.OPEN, FrameType.WRITE, FrameType.TRUNCATE, FrameType.FTRUNCATE, FrameType.FSYNC, FrameType.RELEASE, FrameType.FALLOCATE,
  FrameType.CHMOD, FrameType.CHOWN, FrameType.UTIMENS, FrameType.SETXATTR, FrameType.REMOVEXATTR,
]);

/** Whether the cursor must be committed right after this frame (it changes names in the tree). */
export function needsCommit(type: number): boolean {
  return !BATCHABLE.has(type);
}

/**
 * Applies operations to a replica directory. Confinement: every path is checked by the op table
 * (no absolute path, '..', NUL), and here no directory on the way to an entry may be a symlink,
 * and final components are never followed. Every operation can be applied again right after it
 * was applied (a kill -9 between applying and committing), and any run of BATCHABLE operations
 * can be applied again as a whole.
 */
export class Replayer {
  private readonly handles = new Map<number, Handle>();
  /** Handle changes since the last `takeHandleChanges` (undefined = closed). */
  private readonly handleChanges = new Map<number, string | null | undefined>();
  /**
   * Directories known to be real directories (not symlinks) inside the replica. Only RENAME and
   * RMDIR can turn such a name into something else (new entries never replace a directory).
   */
  private readonly safeDirs = new Set<string>();
  private readonly canChown = process.geteuid?.() === 0;
  private warnedChown = false;
  /** Set when the replica joined the stream late: handles opened before that are unknown, not wrong. */
  private joinedLate = false;
  private readonly skippedHandles = new Set<number>();

  constructor(
    private readonly root: string,
    private readonly log: (m: string) => void = () => {},
  ) {}

  /** Restores the handle table of a resumed cursor (files are reopened on their next write). */
  restoreHandles(handles: Map<number, string | null>): void {
    for (const [id, p] of handles) this.handles.set(id, { path: p, fd: undefined });
  }

  /**
   * The replica joined the stream after its start: writes through files opened before it joined
   * are skipped (with a warning each) instead of refused; the bootstrap copy must bring them.
   */
  tolerateUnknownHandles(): void {
    this.joinedLate = true;
  }

  /** Handle table changes to commit with the cursor; clears them. */
  takeHandleChanges(): Map<number, string | null | undefined> {
    const changes = new Map(this.handleChanges);
    this.handleChanges.clear();
    return changes;
  }

  /** Closes every file the replayer holds open. */
  close(): void {
    for (const h of this.handles.values()) if (h.fd !== undefined) fs.closeSync(h.fd);
    this.handles.clear();
  }

  /** Applies one operation. Throws TfsError naming the frame on hostile input or a failure. */
  apply(op: Op): void {
    try {
      this.dispatch(op);
    } catch (err) {
      if (err instanceof TfsError) throw err;
      const where = 'path' in op ? ` ${JSON.stringify(op.path)}` : 'handle' in op ? ` handle ${op.handle}` : '';
      throw new TfsError(ErrorCode.APPLY_FAILED, `${frameTypeName(op.type)}${where}: ${(err as Error).message}`, { seq: op.seq, cause: err });
    }
  }

  private dispatch(op: Op): void {
    switch (op.type) {
      case FrameType.STREAM_HEADER:
      case FrameType.END:
      case FrameType.HELLO:
        return;
      case FrameType.CREATE: {
        const p = this.entry(op.path, op.seq);
        this.clearNonDir(p);
        const fd = fs.openSync(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
        try {
          this.fchown(fd, op.uid, op.gid);
          fs.fchmodSync(fd, op.mode & PERMS);
          posix.futimensNs(fd, op.times[0], op.times[1]);
        } finally {
          fs.closeSync(fd);
        }
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.MKNOD: {
        const p = this.entry(op.path, op.seq);
        const existing = lstatOrNull(p);
        if (!existing || (existing.mode & S_IFMT) !== (op.mode & S_IFMT)) {
          this.clearNonDir(p);
          posix.mknod(p, (op.mode & S_IFMT) | 0o600, op.rdev);
        }
        this.ownAndTime(p, op.uid, op.gid, op.mode, op.times);
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.MKDIR: {
        const p = this.entry(op.path, op.seq);
        const existing = lstatOrNull(p);
        if (!existing || (existing.mode & S_IFMT) !== S_IFDIR) {
          this.clearNonDir(p);
          fs.mkdirSync(p, 0o700);
        }
        this.ownAndTime(p, op.uid, op.gid, op.mode, op.times);
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.SYMLINK: {
        const p = this.entry(op.path, op.seq);
        const existing = lstatOrNull(p);
        if (!existing || (existing.mode & S_IFMT) !== S_IFLNK || fs.readlinkSync(p) !== op.target) {
          this.clearNonDir(p);
          fs.symlinkSync(op.target, p);
        }
        this.lchown(p, op.uid, op.gid);
        posix.lutimensNs(p, op.times[0], op.times[1]);
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.LINK: {
        const from = this.entry(op.from, op.seq);
        const p = this.entry(op.path, op.seq);
        const source = fs.lstatSync(from);
        const existing = lstatOrNull(p);
        if (!existing || existing.ino !== source.ino || existing.dev !== source.dev) {
          this.clearNonDir(p);
          fs.linkSync(from, p);
        }
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.UNLINK: {
        const p = this.entry(op.path, op.seq);
        const existing = lstatOrNull(p);
        if (existing) {
          if ((existing.mode & S_IFMT) === S_IFDIR) throw new Error('is a directory on the replica');
          fs.unlinkSync(p);
        }
        this.detachHandles(op.path);
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.RMDIR: {
        const p = this.entry(op.path, op.seq);
        if (lstatOrNull(p)) fs.rmdirSync(p);
        this.safeDirs.clear();
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.RENAME: {
        if (op.flags !== 0) throw new TfsError(ErrorCode.BAD_FRAME_FIELDS, `RENAME: flags ${op.flags} are not supported`, { seq: op.seq });
        const from = this.entry(op.from, op.seq);
        const p = this.entry(op.path, op.seq);
        // Applied already (a replay right after a kill): the source is gone and the target is there.
        if (lstatOrNull(from) || !lstatOrNull(p)) {
          if (op.path !== op.from) this.detachHandles(op.path);
          fs.renameSync(from, p);
          this.renameHandles(op.from, op.path);
        }
        this.safeDirs.clear();
        posix.lutimensNs(p, op.times[0], op.times[1]);
        this.setTimes(parentOf(op.from), op.fromParentTimes, op.seq);
        return this.setTimes(parentOf(op.path), op.parentTimes, op.seq);
      }
      case FrameType.OPEN: {
        const old = this.handles.get(op.handle);
        if (old?.fd !== undefined) fs.closeSync(old.fd);
        const fd = fs.openSync(this.entry(op.path, op.seq), O_WRONLY | O_NOFOLLOW);
        this.handles.set(op.handle, { path: op.path, fd });
        this.handleChanges.set(op.handle, op.path);
        return;
      }
      case FrameType.WRITE: {
        const fd = this.fdOf(op.handle, op.seq);
        if (fd === undefined) return;
        let done = 0;
        while (done < op.data.length) done += fs.writeSync(fd, op.data, done, op.data.length - done, op.offset + done);
        return;
      }
      case FrameType.TRUNCATE: {
        const fd = fs.openSync(this.entry(op.path, op.seq), O_WRONLY | O_NOFOLLOW);
        try {
          fs.ftruncateSync(fd, op.size);
          posix.futimensNs(fd, op.times[0], op.times[1]);
        } finally {
          fs.closeSync(fd);
        }
        return;
      }
      case FrameType.FTRUNCATE: {
        const fd = this.fdOf(op.handle, op.seq);
        if (fd === undefined) return;
        fs.ftruncateSync(fd, op.size);
        return posix.futimensNs(fd, op.times[0], op.times[1]);
      }
      case FrameType.FSYNC: {
        const fd = this.fdOf(op.handle, op.seq);
        if (fd === undefined) return;
        posix.futimensNs(fd, op.times[0], op.times[1]);
        return op.datasync ? fs.fdatasyncSync(fd) : fs.fsyncSync(fd);
      }
      case FrameType.RELEASE: {
        const h = this.handles.get(op.handle);
        if (!h) return; // released already (applied again after a kill)
        const fd = this.fdOf(op.handle, op.seq);
        if (fd !== undefined) {
          posix.futimensNs(fd, op.times[0], op.times[1]);
          fs.closeSync(fd);
        }
        this.handles.delete(op.handle);
        this.handleChanges.set(op.handle, undefined);
        return;
      }
      case FrameType.FALLOCATE: {
        const fd = this.fdOf(op.handle, op.seq);
        if (fd === undefined) return;
        fallocateOrEmulate(fd, op.flags, op.offset, op.length);
        return posix.futimensNs(fd, op.times[0], op.times[1]);
      }
      case FrameType.CHMOD: {
        const p = this.entry(op.path, op.seq);
        if ((fs.lstatSync(p).mode & S_IFMT) === S_IFLNK) throw new Error('is a symlink on the replica; chmod would follow it');
        return fs.chmodSync(p, op.mode & PERMS);
      }
      case FrameType.CHOWN: {
        const p = this.entry(op.path, op.seq);
        this.lchown(p, op.uid, op.gid);
        if ((fs.lstatSync(p).mode & S_IFMT) !== S_IFLNK) fs.chmodSync(p, op.mode & PERMS);
        return;
      }
      case FrameType.UTIMENS:
        return posix.lutimensNs(this.entry(op.path, op.seq), op.times[0], op.times[1]);
      case FrameType.SETXATTR:
        // The store already enforced XATTR_CREATE/XATTR_REPLACE; here they would only break a replay.
        return posix.lsetxattr(this.entry(op.path, op.seq), op.name, op.data, 0);
      case FrameType.REMOVEXATTR:
        try {
          return posix.lremovexattr(this.entry(op.path, op.seq), op.name);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENODATA') return;
          throw err;
        }
    }
  }

  /**
   * The replica path of a frame path, after checking that every directory on the way is a real
   * directory inside the replica (a symlink there could lead outside it).
   */
  private entry(rel: string, seq: bigint): string {
    if (rel === '') return this.root;
    let dir = '';
    for (const part of parentOf(rel).split('/')) {
      if (part === '') break;
      dir = dir === '' ? part : `${dir}/${part}`;
      if (this.safeDirs.has(dir)) continue;
      const st = lstatOrNull(path.join(this.root, dir));
      if (st && (st.mode & S_IFMT) === S_IFLNK) {
        throw new TfsError(ErrorCode.HOSTILE_PATH, `path ${JSON.stringify(rel)} passes through the symlink ${JSON.stringify(dir)} in the replica`, { seq });
      }
      if (st && (st.mode & S_IFMT) === S_IFDIR) this.safeDirs.add(dir);
    }
    return path.join(this.root, rel);
  }

  private setTimes(rel: string, times: Times, seq: bigint): void {
    posix.lutimensNs(this.entry(rel, seq), times[0], times[1]);
  }

  /** Makes room for a new entry: removes a non-directory in the way (a replica that diverged). */
  private clearNonDir(p: string): void {
    const st = lstatOrNull(p);
    if (!st) return;
    if ((st.mode & S_IFMT) === S_IFDIR) throw new Error('a directory is in the way on the replica');
    fs.unlinkSync(p);
  }

  private ownAndTime(p: string, uid: number, gid: number, mode: number, times: Times): void {
    this.lchown(p, uid, gid);
    // chmod after chown: chown clears setuid/setgid bits.
    fs.chmodSync(p, mode & PERMS);
    posix.lutimensNs(p, times[0], times[1]);
  }

  private lchown(p: string, uid: number, gid: number): void {
    if (this.chownAllowed()) fs.lchownSync(p, uid, gid);
  }

  private fchown(fd: number, uid: number, gid: number): void {
    if (this.chownAllowed()) fs.fchownSync(fd, uid, gid);
  }

  private chownAllowed(): boolean {
    if (!this.canChown && !this.warnedChown) {
      this.warnedChown = true;
      this.log('not running as root: owners are not replicated');
    }
    return this.canChown;
  }

  private fdOf(handle: number, seq: bigint): number | undefined {
    const h = this.handles.get(handle);
    if (!h && this.joinedLate) {
      if (!this.skippedHandles.has(handle)) this.log(`frame #${seq}: handle ${handle} was opened before this replica joined; its changes are skipped`);
      this.skippedHandles.add(handle);
      return undefined;
    }
    if (!h) throw new TfsError(ErrorCode.UNKNOWN_HANDLE, `handle ${handle} was never opened in this stream`, { seq });
    if (h.fd === undefined && h.path !== null) h.fd = fs.openSync(this.entry(h.path, seq), O_WRONLY | O_NOFOLLOW);
    return h.fd;
  }

  /** The name of an open file was removed or replaced: its handles keep the file, but lose the name. */
  private detachHandles(rel: string): void {
    for (const [id, h] of this.handles) {
      if (h.path === rel) {
        h.path = null;
        this.handleChanges.set(id, null);
      }
    }
  }

  private renameHandles(from: string, to: string): void {
    for (const [id, h] of this.handles) {
      if (h.path === null) continue;
      if (h.path === from || h.path.startsWith(from + '/')) {
        h.path = to + h.path.slice(from.length);
        this.handleChanges.set(id, h.path);
      }
    }
  }
}

/**
 * fallocate on the replica; where its filesystem lacks it, the same content: zeros for a punched
 * hole or zeroed range, and the size the store got (the replica is then less sparse, never different).
 */
function fallocateOrEmulate(fd: number, mode: number, offset: number, length: number): void {
  try {
    return posix.fallocate(fd, mode, offset, length);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EOPNOTSUPP') throw err;
  }
  const size = fs.fstatSync(fd).size;
  const end = offset + length;
  if (mode & (Falloc.PUNCH_HOLE | Falloc.ZERO_RANGE)) {
    const zeros = Buffer.alloc(Math.min(length, 1 << 20));
    const stop = mode & Falloc.KEEP_SIZE ? Math.min(end, size) : end;
    for (let at = offset; at < stop; at += zeros.length) fs.writeSync(fd, zeros, 0, Math.min(zeros.length, stop - at), at);
  } else if (!(mode & Falloc.KEEP_SIZE) && end > size) {
    fs.ftruncateSync(fd, end);
  }
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
