import fs from 'node:fs';
import { FrameType } from '../shared/frame';
import { OpInput, Times } from '../shared/ops';
import { parentOf } from '../shared/paths';
import { posix } from '../shared/posix';
import { S_IFDIR, S_IFLNK, S_IFREG, Stat, Tree, fileType, fstat } from '../shared/tree';

/**
 * Snapshot sessions: a consistent copy of the store, taken while programs use the mount, carried
 * in the stream itself so that a replica can start from it (the first sync of a journal over a
 * non-empty store, a late replica joining, the repair of a replica copied by other means).
 *
 * The order argument. A session is a walk of the store that emits, for each entry, frames that
 * create it with its current content and attributes, tagged `session: S` (replicas that are not
 * bootstrapping from S ignore them). Live changes go on meanwhile, and their frames go to every
 * replica. A replica bootstrapping from S must apply a live frame exactly when the entries it
 * touches exist on the replica, that is when the session already emitted them. The walk and the
 * live handlers both run on the journal's one JavaScript thread, so at the moment a live frame is
 * emitted the session knows exactly which store inodes it has emitted (`synced`), and tags the
 * frame `skipIn: S` when a bootstrapping replica must not apply it: the walk reaches the entry
 * later and emits its state then, which includes the change. The invariant, for a replica
 * bootstrapping from S, after every frame:
 *
 *   the replica has an entry at path p  <=>  the store has one at p and its inode is synced,
 *   and then its content and attributes are the store's.
 *
 * Each live operation keeps it: an entry is created on the replica only when its parent is synced
 * (else the walk, which has not listed that parent yet or was told to come back, finds it); an
 * operation on an entry applies only when its inode is synced; a rename of a synced entry into a
 * parent not yet synced first emits that parent (and its unsynced ancestors: directories only,
 * their children stay for the walk); a rename of an unsynced entry over a synced one removes the
 * synced one from the replica, and the walk is sent back to the new name. The walk itself never
 * emits an entry twice, follows renames of the directories it is listing, and copies a file's
 * content in steps: the file exists on the replica from its first step on (synced), so live
 * writes to it apply, and later steps read the store's current content, newer writes included.
 *
 * A full session starts by emptying the bootstrapping replica (PURGE ''), then walks from the
 * root. A repair session (paths touched while a replica was copied by other means) purges each
 * listed path on the replica and walks it again; inodes under those paths start unsynced, all
 * others synced.
 */

/** What a session needs from the journal. */
export interface SnapshotHost {
  readonly tree: Tree;
  /** Emits a frame (with its tags); `data` is written out before it returns. Returns its sequence number. */
  emit(op: OpInput, data?: Uint8Array): bigint;
  newHandle(): number;
  /** Handles open on an inode (key) that frames already named (OPEN was emitted). */
  announcedHandles(key: string): number[];
  /** Every handle that frames already named, with its file's inode. */
  announcedFiles(): { id: number; key: string }[];
  log(message: string): void;
}

/** The identity of a store entry: its inode (the device too: STORE may hold mount points). */
export function inodeKey(st: Stat): string {
  return `${st.dev}:${st.ino}`;
}

/** Bytes of file content per WRITE frame of a snapshot. */
const CHUNK = 1024 * 1024;

interface Listing {
  /** The directory's path (kept current across renames). */
  path: string;
  names: string[];
  next: number;
}

interface Copy {
  fd: number;
  handle: number;
  offset: number;
}

export class Snapshot {
  /** Inodes emitted by this session (full), or taken back from `pending` (repair). */
  private readonly emitted = new Set<string>();
  /** Repair sessions: the inodes under the listed paths when the session began. */
  private readonly pending: Set<string> | null;
  /** Paths to visit (the entry, and everything under it), in order. */
  private readonly queue: string[] = [];
  /** The directories being listed, innermost last. */
  private readonly listings: Listing[] = [];
  private copy: Copy | null = null;
  /** Files with more than one name: the names the bootstrapping replica has for them. */
  private readonly names = new Map<string, Set<string>>();
  private started = false;
  /** The sequence number of the session's begin frame (once it is out). */
  beginSeq = 0n;
  /** Entries and bytes emitted, for progress lines. */
  entries = 0;
  bytes = 0;

  constructor(
    private readonly host: SnapshotHost,
    readonly id: number,
    /** null: a full session from the root; else the paths to repair. */
    readonly repair: string[] | null,
    /** The token of the client that asked for this session, if one did. */
    readonly request?: string,
  ) {
    if (repair === null) {
      this.pending = null;
      this.queue.push('');
    } else {
      // Files open through the mount start unsynced too (the copy's replica never got their
      // handles): the named ones are among the paths to repair, the nameless ones stay unsynced.
      this.pending = new Set(host.announcedFiles().map((f) => f.key));
      for (const p of outermost(repair)) {
        this.collect(p);
        this.queue.push(p);
      }
    }
  }

  private get tree(): Tree {
    return this.host.tree;
  }

  /** Tags for frames of this session. */
  private get mine(): { session: number } {
    return { session: this.id };
  }

  /** Tags for a live frame that bootstrapping replicas must not apply. */
  get skip(): { skipIn: number } {
    return { skipIn: this.id };
  }

  /** Whether the bootstrapping replica has the entry with this inode. */
  synced(key: string): boolean {
    return this.pending === null ? this.emitted.has(key) : !this.pending.has(key) || this.emitted.has(key);
  }

  /** Whether the bootstrapping replica has the entry at `rel` (false when there is none). */
  syncedPath(rel: string): boolean {
    const st = this.tree.lstatOrNull(rel);
    return st !== null && this.synced(inodeKey(st));
  }

  private emit(op: OpInput, data?: Uint8Array): void {
    this.host.emit({ ...op, ...this.mine } as OpInput, data);
  }

  /**
   * Does a step of the walk (about `budgetMs` of work). Returns true once the session is over
   * (its end frame emitted).
   */
  step(budgetMs: number): boolean {
    const until = Date.now() + budgetMs;
    if (!this.started) {
      this.started = true;
      this.beginSeq = this.host.emit({ type: FrameType.SNAPSHOT_BEGIN, id: this.id, full: this.pending === null, request: this.request });
      if (this.pending === null) {
        this.emit({ type: FrameType.PURGE, path: '' });
        this.emitAttributes('', this.tree.lstat(''));
        this.emitted.add(inodeKey(this.tree.lstat('')));
      } else {
        for (const p of this.queue) this.emit({ type: FrameType.PURGE, path: p });
      }
    }
    do {
      if (this.copy) this.copyStep();
      else if (!this.walkStep()) {
        // Handles the replica never got: their files were never synced, so they have no name now
        // (a full walk reaches every name; a repair is given every open file's names). Through FUSE
        // a file without a name never gets one again, so their frames change nothing it shows.
        const nameless = this.host.announcedFiles().filter((f) => !this.synced(f.key)).map((f) => f.id);
        this.host.emit({ type: FrameType.SNAPSHOT_END, id: this.id, ...(nameless.length > 0 ? { nameless } : {}) });
        return true;
      }
    } while (Date.now() < until);
    return false;
  }

  /** One entry of the walk; false when there is nothing left. */
  private walkStep(): boolean {
    const listing = this.listings.at(-1);
    if (listing) {
      if (listing.next < listing.names.length) {
        const name = listing.names[listing.next++]!;
        this.visit(listing.path === '' ? name : `${listing.path}/${name}`);
      } else {
        this.listings.pop();
        // The directory's times, now that its entries are made (when it still exists, and is synced).
        const st = this.tree.lstatOrNull(listing.path);
        if (st && this.synced(inodeKey(st))) this.emit({ type: FrameType.UTIMENS, path: listing.path, times: [st.atimeNs, st.mtimeNs] });
      }
      return true;
    }
    const next = this.queue.shift();
    if (next === undefined) return false;
    this.visit(next);
    return true;
  }

  /** Emits the entry at `rel` unless the replica has it, and lists it if it is a directory. */
  private visit(rel: string): void {
    const st = this.tree.lstatOrNull(rel);
    if (st === null) return; // gone since: its removal, or its new name, is taken care of
    const key = inodeKey(st);
    // Paths queued by live renames may come before their parent's own turn: the parent is made first.
    if (!this.synced(key) && rel !== '') this.ensureDirectory(parentOf(rel));
    if (!this.synced(key)) this.emitEntry(rel, st, key);
    else if (st.nlink > 1 && fileType(st.mode) !== S_IFDIR) this.emitName(rel, key);
    if (fileType(st.mode) === S_IFDIR) {
      let names: string[];
      try {
        names = this.tree.readdir(rel).sort();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      this.listings.push({ path: rel, names, next: 0 });
    }
  }

  /** A file with several names: the replica gets this name as a hard link to one it has. */
  private emitName(rel: string, key: string): void {
    const known = this.names.get(key);
    if (known === undefined || known.has(rel)) return;
    const from = known.values().next().value as string;
    this.emit({ type: FrameType.LINK, path: rel, from, parentTimes: this.timesOf(parentOf(rel)) });
    known.add(rel);
  }

  private timesOf(rel: string): Times {
    const st = this.tree.lstat(rel);
    return [st.atimeNs, st.mtimeNs];
  }

  /** Emits one entry as it is now (a file's content follows in copy steps). */
  private emitEntry(rel: string, st: Stat, key: string): void {
    this.emitted.add(key);
    this.entries++;
    const common = { path: rel, uid: st.uid, gid: st.gid, times: [st.atimeNs, st.mtimeNs] as Times, parentTimes: this.timesOf(parentOf(rel)) };
    switch (fileType(st.mode)) {
      case S_IFDIR:
        this.emit({ type: FrameType.MKDIR, mode: st.mode, ...common });
        break;
      case S_IFREG: {
        this.emit({ type: FrameType.CREATE, mode: st.mode, ...common });
        const fd = this.tree.open(rel, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        const handle = this.host.newHandle();
        this.emit({ type: FrameType.OPEN, handle, path: rel });
        this.copy = { fd, handle, offset: 0 };
        // Handles already announced to in-sync replicas, for writes through them from now on: by
        // the name the replica has now (any name of the file will do).
        for (const id of this.host.announcedHandles(key)) this.emit({ type: FrameType.OPEN, handle: id, path: rel });
        break;
      }
      case S_IFLNK:
        this.emit({ type: FrameType.SYMLINK, target: this.tree.readlink(rel), ...common });
        break;
      default:
        this.emit({ type: FrameType.MKNOD, mode: st.mode, rdev: st.rdev, ...common });
    }
    // Any entry but a directory may have more names: the others become hard links of this one.
    if (st.nlink > 1 && fileType(st.mode) !== S_IFDIR) this.names.set(key, new Set([rel]));
    this.emitAttributes(rel, st);
  }

  /** Extended attributes (ACLs among them), and, for the root, mode and owner. */
  private emitAttributes(rel: string, st: Stat): void {
    if (rel === '') {
      this.emit({ type: FrameType.CHOWN, path: '', uid: st.uid, gid: st.gid, mode: st.mode });
      this.emit({ type: FrameType.UTIMENS, path: '', times: [st.atimeNs, st.mtimeNs] });
    }
    let names: string[];
    try {
      names = this.tree.listxattr(rel);
    } catch {
      return; // no xattrs here (a symlink on some filesystems)
    }
    for (const name of names) {
      try {
        this.emit({ type: FrameType.SETXATTR, path: rel, name, flags: 0 }, this.tree.getxattr(rel, name));
      } catch {
        // removed meanwhile
      }
    }
  }

  /** Copies the next chunk of the file being copied; after its end, its size and times. */
  private copyStep(): void {
    const c = this.copy!;
    // Holes are skipped (the replica's file stays as sparse as the store's): read from the next data.
    let at: number;
    try {
      at = posix.seekData(c.fd, c.offset);
    } catch {
      at = -1; // past the last data: done
    }
    if (at >= 0) {
      const buf = Buffer.allocUnsafe(CHUNK);
      const n = fs.readSync(c.fd, buf, 0, CHUNK, at);
      if (n > 0) {
        this.emit({ type: FrameType.WRITE, handle: c.handle, offset: at }, buf.subarray(0, n));
        this.bytes += n;
        c.offset = at + n;
        return;
      }
    }
    const st = fstat(c.fd);
    this.emit({ type: FrameType.FTRUNCATE, handle: c.handle, size: st.size, times: [st.atimeNs, st.mtimeNs] });
    this.emit({ type: FrameType.RELEASE, handle: c.handle, times: [st.atimeNs, st.mtimeNs] });
    fs.closeSync(c.fd);
    this.copy = null;
  }

  /** Repair sessions: the inodes under `rel` start unsynced. */
  private collect(rel: string): void {
    for (const [, st] of this.tree.walk(rel)) this.pending!.add(inodeKey(st));
  }

  // --- Live changes. Each is told before its frame is emitted, and returns the tags for it. ---

  /** An entry was created at `rel` (its inode `key`): the replica gets it if its parent is synced. */
  created(rel: string, key: string): { skipIn?: number } {
    // Every new inode comes through here: what the session knew of an earlier inode with the same
    // number (a file removed since; filesystems reuse numbers) is forgotten.
    this.names.delete(key);
    if (this.syncedPath(parentOf(rel))) {
      this.emitted.add(key);
      return {};
    }
    this.emitted.delete(key);
    this.pending?.add(key);
    return this.skip;
  }

  /**
   * A change to the entry with inode `key` (data, attributes, an open handle), named `rel` in its
   * frame when the frame names it: a replica that has the file by another name gets this one first.
   */
  changed(key: string, rel?: string): { skipIn?: number } {
    if (!this.synced(key)) return this.skip;
    if (rel !== undefined) this.nameKnown(rel, key);
    return {};
  }

  /** `rel` (inode `key`) is about to be removed. */
  removing(rel: string, key: string): { skipIn?: number } {
    const known = this.names.get(key);
    // A name of a file with several that the replica does not have: nothing to remove there.
    if (known !== undefined && !known.has(rel)) return this.skip;
    const tags = this.synced(key) ? {} : this.skip;
    this.dropName(key, rel);
    return tags;
  }

  /**
   * The replica loses the name `rel` of the file `key`. When it was the last name the replica had,
   * the file's other names in the store (if any) are not on the replica: the file is no longer
   * synced, and the walk brings it whole.
   */
  private dropName(key: string, rel: string): void {
    const known = this.names.get(key);
    if (known === undefined || !known.delete(rel) || known.size > 0) return;
    this.names.delete(key);
    this.emitted.delete(key);
    this.pending?.add(key);
  }

  /** A live frame names the synced file `key` by `rel`: the replica gets that name if it lacks it. */
  private nameKnown(rel: string, key: string): void {
    const known = this.names.get(key);
    if (known === undefined || known.has(rel)) return;
    this.ensureDirectory(parentOf(rel));
    this.emitName(rel, key);
  }

  /** After a removal that the replica skipped: its parent's times, if it has the parent. */
  removed(rel: string, skipped: boolean): void {
    if (skipped) this.parentTimes(rel);
  }

  /** A hard link `to` of the file `key`, named `from`, is about to be made (after the store made it). */
  linked(to: string, key: string, from: string): { skipIn?: number } {
    if (!this.synced(key)) {
      this.queue.push(to);
      return this.skip;
    }
    this.nameKnown(from, key);
    this.ensureDirectory(parentOf(to));
    this.names.get(key)?.add(to);
    return {};
  }

  /**
   * A rename from `from` (inode `key`) to `to`, replacing `replaced` (or nothing), has happened on
   * the store; its frame comes next. Returns its tags.
   */
  renamed(from: string, to: string, key: string, replaced: Stat | null): { skipIn?: number } {
    if (this.synced(key)) {
      this.nameKnown(from, key);
      this.follow(from, to);
      this.ensureDirectory(parentOf(to));
      if (replaced) this.dropName(inodeKey(replaced), to);
      return {};
    }
    this.follow(from, to);
    // The entry is not on the replica: whatever the replica has at `to` goes, and the walk comes back to `to`.
    if (replaced && this.synced(inodeKey(replaced))) {
      this.dropName(inodeKey(replaced), to);
      this.emit({ type: fileType(replaced.mode) === S_IFDIR ? FrameType.RMDIR : FrameType.UNLINK, path: to, parentTimes: this.timesOf(parentOf(to)) });
    }
    this.parentTimes(from);
    this.parentTimes(to);
    this.queue.push(to);
    return this.skip;
  }

  /** The walk follows a directory (and what it knows of files with several names) to its new name. */
  private follow(from: string, to: string): void {
    const move = (p: string) => (p === from ? to : p.startsWith(from + '/') ? to + p.slice(from.length) : p);
    for (const l of this.listings) l.path = move(l.path);
    for (let i = 0; i < this.queue.length; i++) this.queue[i] = move(this.queue[i]!);
    for (const set of this.names.values()) {
      for (const p of [...set]) {
        const q = move(p);
        if (q !== p) {
          set.delete(p);
          set.add(q);
        }
      }
    }
  }

  /** Makes a directory (and its unsynced ancestors) exist on the replica; its entries stay for the walk. */
  private ensureDirectory(rel: string): void {
    const st = this.tree.lstat(rel);
    const key = inodeKey(st);
    if (this.synced(key)) return;
    if (rel !== '') this.ensureDirectory(parentOf(rel));
    this.emitted.add(key);
    this.entries++;
    this.emit({ type: FrameType.MKDIR, path: rel, mode: st.mode, uid: st.uid, gid: st.gid, times: [st.atimeNs, st.mtimeNs], parentTimes: this.timesOf(parentOf(rel)) });
    this.emitAttributes(rel, st);
    this.queue.push(rel);
  }

  /** The replica's copy of `rel`'s parent gets the store's times (a change there was skipped). */
  private parentTimes(rel: string): void {
    const parent = parentOf(rel);
    const st = this.tree.lstatOrNull(parent);
    if (st && this.synced(inodeKey(st))) this.emit({ type: FrameType.UTIMENS, path: parent, times: [st.atimeNs, st.mtimeNs] });
  }

  /** Releases what the session holds (the journal is going away). */
  close(): void {
    if (this.copy) fs.closeSync(this.copy.fd);
    this.copy = null;
  }
}

/** The paths that are not inside another one of the list. */
function outermost(paths: string[]): string[] {
  const sorted = [...new Set(paths)].sort();
  const out: string[] = [];
  for (const p of sorted) {
    const last = out.at(-1);
    if (last !== undefined && (last === '' || p === last || p.startsWith(last + '/'))) continue;
    out.push(p);
  }
  return out;
}
