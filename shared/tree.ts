import fs from 'node:fs';
import { posix, xattrNames } from './posix';

/** An entry's attributes, as lstat(2) gives them; times in nanoseconds since the epoch. */
export interface Stat {
  dev: bigint;
  ino: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blksize: number;
  blocks: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/** The file type bits of a mode. */
export function fileType(mode: number): number {
  return mode & S_IFMT;
}

// One buffer for every stat call: each call converts it to a Stat before returning.
const statBuffer = new BigInt64Array(13);

function toStat(b: BigInt64Array): Stat {
  return {
    dev: b[0]!,
    ino: b[1]!,
    mode: Number(b[2]),
    nlink: Number(b[3]),
    uid: Number(b[4]),
    gid: Number(b[5]),
    rdev: Number(b[6]),
    size: Number(b[7]),
    blksize: Number(b[8]),
    blocks: Number(b[9]),
    atimeNs: b[10]!,
    mtimeNs: b[11]!,
    ctimeNs: b[12]!,
  };
}

/** fstat(2) of an open descriptor. */
export function fstat(fd: number): Stat {
  posix.fstatInto(fd, statBuffer);
  return toStat(statBuffer);
}

/**
 * A directory tree addressed by paths relative to its root (as frames and FUSE carry them, '' for
 * the root itself), through a descriptor of the root: no call ever builds the root's absolute path
 * plus the entry's, so an entry path of PATH_MAX-1 bytes works however deep the root lies, and a
 * renamed root is followed. A `confined` tree (a replica) resolves every path beneath its root
 * with no symlink on the way or at the end, in the kernel (openat2): a symlink, even one swapped
 * in by another process, fails the call with ELOOP instead of leading elsewhere. An unconfined
 * tree (the journal's store, whose paths the kernel resolved already) only never follows a final
 * symlink where the call has a choice.
 */
export class Tree {
  readonly fd: number;

  constructor(
    readonly root: string,
    readonly confined: boolean,
  ) {
    this.fd = posix.openDir(root);
  }

  /** Opens an entry (flags as open(2); add O_NOFOLLOW yourself when unconfined). */
  open(rel: string, flags: number, mode = 0): number {
    return posix.openAt(this.fd, rel, this.confined, flags, mode);
  }

  lstat(rel: string): Stat {
    posix.statAt(this.fd, rel, this.confined, statBuffer);
    return toStat(statBuffer);
  }

  /** lstat, or null when there is no such entry (also when a component on the way is no directory). */
  lstatOrNull(rel: string): Stat | null {
    try {
      return this.lstat(rel);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw err;
    }
  }

  readdir(rel: string): string[] {
    return posix.readdirAt(this.fd, rel, this.confined);
  }

  /**
   * Every entry at and under `rel` with its lstat, parents first (symlinks are not followed).
   * Entries that vanish during the walk are skipped: the tree may be in use.
   */
  *walk(rel: string): Generator<[string, Stat]> {
    const st = this.lstatOrNull(rel);
    if (st === null) return;
    yield [rel, st];
    if (fileType(st.mode) !== S_IFDIR) return;
    let names: string[];
    try {
      names = this.readdir(rel);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw err;
    }
    for (const name of names) yield* this.walk(rel === '' ? name : `${rel}/${name}`);
  }

  readlink(rel: string): string {
    return posix.readlinkAt(this.fd, rel, this.confined);
  }

  mkdir(rel: string, mode: number): void {
    posix.mkdirAt(this.fd, rel, this.confined, mode);
  }

  mknod(rel: string, mode: number, rdev: number): void {
    posix.mknodAt(this.fd, rel, this.confined, mode, rdev);
  }

  symlink(target: string, rel: string): void {
    posix.symlinkAt(target, this.fd, rel, this.confined);
  }

  unlink(rel: string): void {
    posix.unlinkAt(this.fd, rel, this.confined, false);
  }

  rmdir(rel: string): void {
    posix.unlinkAt(this.fd, rel, this.confined, true);
  }

  /** renameat2 (flags from Rename). */
  rename(from: string, to: string, flags = 0): void {
    posix.renameAt(this.fd, from, to, this.confined, flags);
  }

  link(from: string, to: string): void {
    posix.linkAt(this.fd, from, to, this.confined);
  }

  /** chown without following a final symlink; -1 leaves an id unchanged. */
  lchown(rel: string, uid: number, gid: number): void {
    posix.chownAt(this.fd, rel, this.confined, uid, gid);
  }

  /** Sets both times (BigInt ns; -1n now, -2n omit) without following a final symlink. */
  lutimens(rel: string, atimeNs: bigint, mtimeNs: bigint): void {
    posix.utimensAt(this.fd, rel, this.confined, atimeNs, mtimeNs);
  }

  access(rel: string, mode: number): void {
    posix.accessAt(this.fd, rel, this.confined, mode);
  }

  /** chmod of the entry itself: EOPNOTSUPP for a symlink (Linux has no lchmod), never followed. */
  chmod(rel: string, mode: number): void {
    posix.chmodAt(this.fd, rel, this.confined, mode);
  }

  setxattr(rel: string, name: string, value: Uint8Array, flags: number): void {
    posix.setxattrAt(this.fd, rel, this.confined, name, value, flags);
  }

  removexattr(rel: string, name: string): void {
    posix.removexattrAt(this.fd, rel, this.confined, name);
  }

  getxattr(rel: string, name: string): Buffer {
    return posix.getxattrAt(this.fd, rel, this.confined, name);
  }

  listxattr(rel: string): string[] {
    return xattrNames(posix.listxattrAt(this.fd, rel, this.confined));
  }

  /** The kernel's id of the mount the root lies on (a new one after every mount, never reused meanwhile). */
  mountId(): string {
    return /^mnt_id:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${this.fd}`, 'utf8'))?.[1] ?? '?';
  }

  /** Flushes the whole filesystem the tree lies on to disk. */
  syncfs(): void {
    posix.syncfs(this.fd);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
