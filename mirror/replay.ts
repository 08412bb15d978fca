import fs from 'node:fs';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, frameTypeName } from '../shared/frame';
import { Op, Times } from '../shared/ops';
import { parentOf } from '../shared/paths';
import { Falloc, posix } from '../shared/posix';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, Stat, Tree, fileType } from '../shared/tree';

const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
const PERMS = 0o7777;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const CAPABILITY = 'security.capability';

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

/** Files open for writing at once: a stream that opens more is refused (no store has that many). */
export const MAX_HANDLES = 65536;
/** Descriptors the mirror keeps open for handles (the rest are opened again by name when used). */
const MAX_FDS = 256;

/** What a replica takes from a stream beyond plain files, directories, links and fifos. */
export interface ReplayPolicy {
  /** Create character and block devices (refused otherwise: a stream could make /dev/mem). */
  allowDevices?: boolean;
  /** Keep setuid/setgid bits on files and security.capability xattrs (dropped otherwise, with a note). */
  preservePrivileges?: boolean;
}

/**
 * Applies operations to a replica directory. Confinement: every path is checked by the op table
 * (no absolute path, '..', NUL, no namespace change of the root itself), and the replica is a
 * confined Tree: the kernel resolves each path beneath the replica with no symlink anywhere,
 * so nothing outside it is ever created, changed or followed, even when another process swaps a
 * directory for a symlink while we work. Every operation can be applied again right after it was
 * applied (a kill -9 between applying and committing), and any run of BATCHABLE operations can
 * be applied again as a whole.
 */
export class Replayer {
  private readonly tree: Tree;
  private readonly handles = new Map<number, Handle>();
  /** Descriptors open for handles. */
  private openFds = 0;
  /** Handle changes since the last `takeHandleChanges` (undefined = closed). */
  private readonly handleChanges = new Map<number, string | null | undefined>();
  private readonly canChown = process.geteuid?.() === 0;
  /** Kinds of things dropped by the policy, each noted once. */
  private readonly noted = new Set<string>();

  /** Durable mode: what changed since the last `sync` (entries and directories by path, written files by descriptor). */
  private readonly dirty = new Set<string>();
  private readonly dirtyFds = new Set<number>();

  /**
   * `durable`: remember everything changed, so that `sync` can make it durable (fsync of each file
   * and directory, which works on any filesystem: a FUSE or network one too, where syncfs may not).
   */
  constructor(
    root: string,
    private readonly log: (m: string) => void = () => {},
    private readonly policy: ReplayPolicy = {},
    private readonly durable = false,
  ) {
    this.tree = new Tree(root, true);
  }

  /** Restores the handle table of a resumed cursor (files are reopened on their next write). */
  restoreHandles(handles: Map<number, string | null>): void {
    for (const [id, p] of handles) this.handles.set(id, { path: p, fd: undefined });
  }

  /**
   * Handles the snapshot this replica bootstrapped from could not bring: open on files that have
   * no name (their frames are skipped, like those of any handle whose name is gone).
   */
  namelessHandles(ids: number[]): void {
    for (const id of ids) {
      if (this.handles.has(id)) continue;
      this.handles.set(id, { path: null, fd: undefined });
      this.handleChanges.set(id, null);
    }
  }

  /**
   * Before a frame that removes a name (UNLINK, or RENAME over it): handles that write through
   * that name move to another name of the same file when it has one, so that they still reach the
   * file after a restart (when their descriptor is gone and only the name is left). The mirror
   * commits this before applying the frame: the other name is valid on either side of it.
   */
  prepare(op: Op): void {
    const rel = op.type === FrameType.UNLINK ? op.path : op.type === FrameType.RENAME && op.path !== op.from ? op.path : null;
    if (rel === null) return;
    if (this.handles.size === 0) return;
    const ids: number[] = [];
    for (const [id, h] of this.handles) if (h.path === rel) ids.push(id);
    if (ids.length === 0) return;
    const st = this.tree.lstatOrNull(rel);
    if (st === null || fileType(st.mode) !== S_IFREG || st.nlink < 2) return;
    const other = this.otherName(st, rel);
    if (other === null) return;
    for (const id of ids) {
      this.handles.get(id)!.path = other;
      this.handleChanges.set(id, other);
    }
  }

  /** Another name of the file `st` in the replica than `rel` (a walk of the replica: rare). */
  private otherName(st: Stat, rel: string): string | null {
    for (const [p, e] of this.tree.walk('')) if (p !== rel && e.ino === st.ino && e.dev === st.dev) return p;
    return null;
  }

  /** Whether the replica holds any entry. */
  holdsAnything(): boolean {
    return this.tree.readdir('').length > 0;
  }

  /** The file a handle writes to, for messages. */
  private describeHandle(handle: number): string {
    const h = this.handles.get(handle);
    return h === undefined ? 'not open' : h.path === null ? 'a file whose name is gone' : JSON.stringify(h.path);
  }

  /** Handle table changes to commit with the cursor; clears them. */
  takeHandleChanges(): Map<number, string | null | undefined> {
    const changes = new Map(this.handleChanges);
    this.handleChanges.clear();
    return changes;
  }

  /** Closes every file the replayer holds open (the replayer can go on, reopening them on demand). */
  closeFiles(): void {
    for (const h of this.handles.values()) if (h.fd !== undefined) this.closeFd(h.fd);
    this.handles.clear();
  }

  /**
   * Opens a file for a handle. At most MAX_FDS stay open: past that, the oldest descriptor of a
   * handle that has a name is closed (it is opened again by its name when next used).
   */
  private openFd(rel: string): number {
    if (++this.openFds > MAX_FDS) {
      for (const h of this.handles.values()) {
        if (h.fd !== undefined && h.path !== null) {
          this.closeFd(h.fd);
          h.fd = undefined;
          break;
        }
      }
    }
    try {
      return this.tree.open(rel, O_WRONLY);
    } catch (err) {
      this.openFds--;
      throw err;
    }
  }

  /** Closes a file descriptor, syncing it first if durable mode still owes it a sync. */
  private closeFd(fd: number): void {
    this.openFds--;
    if (this.dirtyFds.delete(fd)) fs.fsyncSync(fd);
    fs.closeSync(fd);
  }

  /**
   * Where the replica is written now: this boot of the machine and this mount of its filesystem
   * (the kernel may give a later mount the same id; a power cut always brings a new boot). Tests
   * stand for a reboot with TFS_BOOT_ID.
   */
  whereabouts(): string {
    const boot = process.env['TFS_BOOT_ID'] ?? fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `boot ${boot}, mount ${this.tree.mountId()}`;
  }

  /**
   * Makes everything changed since the last call durable (durable mode): each written file, each
   * entry whose data or attributes changed, each directory whose entries changed, is fsynced.
   */
  sync(): void {
    for (const fd of this.dirtyFds) fs.fsyncSync(fd);
    this.dirtyFds.clear();
    for (const rel of this.dirty) this.fsyncEntry(rel);
    this.dirty.clear();
  }

  private fsyncEntry(rel: string): void {
    const st = this.tree.lstatOrNull(rel);
    // Gone since (its directory is in the set too), or not something to open: a symlink, fifo or
    // device lives in its directory's fsync.
    if (st === null || (fileType(st.mode) !== S_IFDIR && fileType(st.mode) !== S_IFREG)) return;
    const fd = this.tree.open(rel, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Durable mode: `rel` changed (data or attributes). */
  private touch(rel: string): void {
    if (this.durable) this.dirty.add(rel);
  }

  /** Durable mode: the entries of `rel`'s directory changed, and `rel` itself. */
  private touchEntry(rel: string): void {
    if (!this.durable) return;
    this.dirty.add(rel);
    this.dirty.add(parentOf(rel));
  }

  /** Closes every file and the replica. */
  close(): void {
    this.closeFiles();
    this.tree.close();
  }

  /** Applies one operation. Throws TfsError naming the frame on hostile input or a failure. */
  apply(op: Op): void {
    try {
      this.dispatch(op);
    } catch (err) {
      if (err instanceof TfsError) throw err;
      const where = 'path' in op ? ` ${JSON.stringify(op.path)}` : 'handle' in op ? ` handle ${op.handle} (${this.describeHandle(op.handle)})` : '';
      const code = (err as NodeJS.ErrnoException).code;
      // The confined tree answers ELOOP for a symlink on the way or at the end, EXDEV for an escape:
      // the stream (or someone beside it) is trying to reach outside the replica.
      if (code === 'ELOOP' || code === 'EXDEV') {
        throw new TfsError(ErrorCode.HOSTILE_PATH, `${frameTypeName(op.type)}${where}: a symlink in the replica is on the way or at the end (${code}); nothing was followed`, { seq: op.seq, cause: err });
      }
      throw new TfsError(ErrorCode.APPLY_FAILED, `${frameTypeName(op.type)}${where}: ${(err as Error).message}`, { seq: op.seq, cause: err });
    }
  }

  private dispatch(op: Op): void {
    const t = this.tree;
    switch (op.type) {
      case FrameType.STREAM_HEADER:
      case FrameType.END:
      case FrameType.HELLO:
      case FrameType.ERROR:
      case FrameType.REQUEST:
      case FrameType.SNAPSHOT_BEGIN:
      case FrameType.SNAPSHOT_END:
        return;
      case FrameType.PURGE:
        // A snapshot replaces what the replica has at this path (everything in it, for the root).
        this.touch(parentOf(op.path));
        for (const [id, h] of this.handles) {
          if (h.path !== null && (op.path === '' || h.path === op.path || h.path.startsWith(op.path + '/'))) {
            h.path = null;
            this.handleChanges.set(id, null);
          }
        }
        return this.purge(op.path);
      case FrameType.CREATE: {
        this.touchEntry(op.path);
        this.clearNonDir(op.path);
        const fd = t.open(op.path, O_WRONLY | O_CREAT | O_EXCL, 0o600);
        try {
          this.fchown(fd, op.uid, op.gid);
          fs.fchmodSync(fd, this.perms(op.mode, S_IFREG, op));
          posix.futimensNs(fd, op.times[0], op.times[1]);
        } finally {
          fs.closeSync(fd);
        }
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.MKNOD: {
        this.touchEntry(op.path);
        const type = fileType(op.mode);
        if ((type === S_IFCHR || type === S_IFBLK) && !this.policy.allowDevices) {
          const kind = type === S_IFCHR ? 'character' : 'block';
          throw new TfsError(ErrorCode.REFUSED, `MKNOD ${JSON.stringify(op.path)}: a ${kind} device (${op.rdev >>> 8}:${op.rdev & 0xff}); pass --allow-devices to create device nodes`, { seq: op.seq });
        }
        const existing = t.lstatOrNull(op.path);
        if (!existing || fileType(existing.mode) !== type) {
          this.clearNonDir(op.path);
          t.mknod(op.path, type | 0o600, op.rdev);
        }
        this.ownAndTime(op.path, op.uid, op.gid, op.mode, type, op.times, op);
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.MKDIR: {
        this.touchEntry(op.path);
        const existing = t.lstatOrNull(op.path);
        if (!existing || fileType(existing.mode) !== S_IFDIR) {
          this.clearNonDir(op.path);
          t.mkdir(op.path, 0o700);
        }
        this.ownAndTime(op.path, op.uid, op.gid, op.mode, S_IFDIR, op.times, op);
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.SYMLINK: {
        this.touchEntry(op.path);
        const existing = t.lstatOrNull(op.path);
        if (!existing || fileType(existing.mode) !== S_IFLNK || t.readlink(op.path) !== op.target) {
          this.clearNonDir(op.path);
          t.symlink(op.target, op.path);
        }
        this.lchown(op.path, op.uid, op.gid);
        t.lutimens(op.path, op.times[0], op.times[1]);
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.LINK: {
        this.touchEntry(op.path);
        const source = t.lstat(op.from);
        const existing = t.lstatOrNull(op.path);
        if (!existing || existing.ino !== source.ino || existing.dev !== source.dev) {
          this.clearNonDir(op.path);
          t.link(op.from, op.path);
        }
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.UNLINK: {
        this.touch(parentOf(op.path));
        const existing = t.lstatOrNull(op.path);
        if (existing) {
          if (fileType(existing.mode) === S_IFDIR) throw new Error('is a directory on the replica');
          t.unlink(op.path);
        }
        this.detachHandles(op.path);
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.RMDIR: {
        this.touch(parentOf(op.path));
        if (t.lstatOrNull(op.path)) t.rmdir(op.path);
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.RENAME: {
        if (op.flags !== 0) throw new TfsError(ErrorCode.BAD_FRAME_FIELDS, `RENAME: flags ${op.flags} are not supported`, { seq: op.seq });
        this.touch(parentOf(op.from));
        this.touchEntry(op.path);
        // Applied already (a replay right after a kill): the source is gone and the target is there.
        if (t.lstatOrNull(op.from) || !t.lstatOrNull(op.path)) t.rename(op.from, op.path);
        // The handles follow either way: the cursor's handle table is the one from before this frame.
        if (op.path !== op.from) this.detachHandles(op.path);
        this.renameHandles(op.from, op.path);
        t.lutimens(op.path, op.times[0], op.times[1]);
        this.setTimes(parentOf(op.from), op.fromParentTimes);
        return this.setTimes(parentOf(op.path), op.parentTimes);
      }
      case FrameType.OPEN: {
        const old = this.handles.get(op.handle);
        if (old?.fd !== undefined) {
          this.closeFd(old.fd);
          old.fd = undefined;
        }
        if (old === undefined && this.handles.size >= MAX_HANDLES) {
          throw new TfsError(ErrorCode.REFUSED, `OPEN handle ${op.handle}: ${MAX_HANDLES} files are open for writing already; no store has that many`, { seq: op.seq });
        }
        const fd = this.openFd(op.path);
        this.handles.set(op.handle, { path: op.path, fd });
        this.handleChanges.set(op.handle, op.path);
        return;
      }
      case FrameType.WRITE: {
        const fd = this.fdOf(op.handle, op.seq);
        if (fd === undefined) return;
        let done = 0;
        while (done < op.data.length) done += fs.writeSync(fd, op.data, done, op.data.length - done, op.offset + done);
        if (this.durable) this.dirtyFds.add(fd);
        return;
      }
      case FrameType.TRUNCATE: {
        this.touch(op.path);
        const fd = t.open(op.path, O_WRONLY);
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
        if (this.durable) this.dirtyFds.add(fd);
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
          this.releaseTimes(fd, h.path === null, op);
          // Durable: the data goes to disk before the descriptor that can sync it is gone (closeFd).
          this.closeFd(fd);
        }
        this.handles.delete(op.handle);
        this.handleChanges.set(op.handle, undefined);
        return;
      }
      case FrameType.FALLOCATE: {
        const fd = this.fdOf(op.handle, op.seq);
        if (fd === undefined) return;
        fallocateOrEmulate(fd, op.flags, op.offset, op.length);
        if (this.durable) this.dirtyFds.add(fd);
        return posix.futimensNs(fd, op.times[0], op.times[1]);
      }
      case FrameType.CHMOD:
        this.touch(op.path);
        // A symlink answers EOPNOTSUPP: Linux cannot chmod one, and it is never followed.
        return t.chmod(op.path, this.perms(op.mode, fileType(t.lstat(op.path).mode), op));
      case FrameType.CHOWN: {
        this.touch(op.path);
        this.lchown(op.path, op.uid, op.gid);
        const st = t.lstat(op.path);
        if (fileType(st.mode) !== S_IFLNK) t.chmod(op.path, this.perms(op.mode, fileType(st.mode), op));
        return;
      }
      case FrameType.UTIMENS:
        this.touch(op.path);
        return t.lutimens(op.path, op.times[0], op.times[1]);
      case FrameType.SETXATTR:
        this.touch(op.path);
        if (op.name === CAPABILITY && !this.policy.preservePrivileges) return this.note('capabilities', op, 'file capabilities (security.capability)');
        // The store already enforced XATTR_CREATE/XATTR_REPLACE; here they would only break a replay.
        return t.setxattr(op.path, op.name, op.data, 0);
      case FrameType.REMOVEXATTR:
        this.touch(op.path);
        try {
          return t.removexattr(op.path, op.name);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENODATA') return;
          throw err;
        }
    }
  }

  /**
   * The permission bits to apply to an entry of `type` (as it is on the replica, not as the frame
   * says): setuid and setgid on anything but a directory (where setgid only passes the group on)
   * are dropped unless the policy preserves privileges.
   */
  private perms(mode: number, type: number, op: Op & { path: string }): number {
    const bits = mode & PERMS;
    if (this.policy.preservePrivileges || !(bits & (S_ISUID | S_ISGID)) || type === S_IFDIR) return bits;
    this.note('setid', op, 'setuid/setgid bits');
    return bits & ~(S_ISUID | S_ISGID);
  }

  /** Says once per kind that the policy dropped something, and how to keep it. */
  private note(kind: string, op: Op & { path: string }, what: string): void {
    if (this.noted.has(kind)) return;
    this.noted.add(kind);
    this.log(`frame #${op.seq} ${frameTypeName(op.type)} ${JSON.stringify(op.path)}: ${what} are not applied (this one and every later one); pass --preserve-privileges to keep them`);
  }

  /**
   * The times a file had when the store closed it. A FUSE filesystem under the replica may refuse
   * them (ENOENT) for a file whose name is gone (libfuse's hard_remove resolves setattr by path):
   * then no name shows them, unless another hard link does, which is said once.
   */
  private releaseTimes(fd: number, nameless: boolean, op: Op & { times: Times }): void {
    try {
      posix.futimensNs(fd, op.times[0], op.times[1]);
    } catch (err) {
      if (!nameless || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (this.noted.has('nameless')) return;
      this.noted.add('nameless');
      this.log(`frame #${op.seq} RELEASE: the replica's filesystem refuses times for a file whose name is gone (ENOENT); they are left (this one and every later one)`);
    }
  }

  private setTimes(rel: string, times: Times): void {
    this.tree.lutimens(rel, times[0], times[1]);
  }

  /** Makes room for a new entry: removes a non-directory in the way (a replica that diverged). */
  private clearNonDir(rel: string): void {
    const st = this.tree.lstatOrNull(rel);
    if (!st) return;
    if (fileType(st.mode) === S_IFDIR) throw new Error('a directory is in the way on the replica');
    this.tree.unlink(rel);
  }

  private ownAndTime(rel: string, uid: number, gid: number, mode: number, type: number, times: Times, op: Op & { path: string }): void {
    this.lchown(rel, uid, gid);
    // chmod after chown: chown clears setuid/setgid bits.
    this.tree.chmod(rel, this.perms(mode, type, op));
    this.tree.lutimens(rel, times[0], times[1]);
  }

  private lchown(rel: string, uid: number, gid: number): void {
    if (this.chownAllowed()) this.tree.lchown(rel, uid, gid);
  }

  private fchown(fd: number, uid: number, gid: number): void {
    if (this.chownAllowed()) fs.fchownSync(fd, uid, gid);
  }

  private chownAllowed(): boolean {
    if (!this.canChown && !this.noted.has('owners')) {
      this.noted.add('owners');
      this.log('not running as root: owners are not replicated');
    }
    return this.canChown;
  }

  private fdOf(handle: number, seq: bigint): number | undefined {
    const h = this.handles.get(handle);
    if (!h) throw new TfsError(ErrorCode.UNKNOWN_HANDLE, `handle ${handle} was never opened in this stream`, { seq });
    if (h.fd === undefined && h.path !== null) h.fd = this.openFd(h.path);
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

  /** Removes the entry at `rel` and everything under it ('' : everything in the replica, not the replica). */
  private purge(rel: string): void {
    const st = this.tree.lstatOrNull(rel);
    if (st === null) return;
    if (fileType(st.mode) === S_IFDIR) {
      for (const name of this.tree.readdir(rel)) this.purge(rel === '' ? name : `${rel}/${name}`);
      if (rel !== '') this.tree.rmdir(rel);
    } else this.tree.unlink(rel);
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
