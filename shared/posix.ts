import path from 'node:path';

/**
 * System calls Node's fs lacks (shared/native/posix.c). Path calls take a directory descriptor, a
 * path relative to it ('' = the directory itself) and `confined` (resolve beneath the directory,
 * no symlink anywhere on the way or at the end). Errors carry code/errno/syscall like Node's.
 * Use them through Tree (shared/tree.ts).
 */
export interface Posix {
  openDir(path: string): number;
  openAt(dirfd: number, path: string, confined: boolean, flags: number, mode: number): number;
  /** lstat semantics, into a BigInt64Array of STAT_FIELDS (see StatField). */
  statAt(dirfd: number, path: string, confined: boolean, out: BigInt64Array): void;
  fstatInto(fd: number, out: BigInt64Array): void;
  readdirAt(dirfd: number, path: string, confined: boolean): string[];
  readlinkAt(dirfd: number, path: string, confined: boolean): string;
  mkdirAt(dirfd: number, path: string, confined: boolean, mode: number): void;
  mknodAt(dirfd: number, path: string, confined: boolean, mode: number, rdev: number): void;
  symlinkAt(target: string, dirfd: number, path: string, confined: boolean): void;
  unlinkAt(dirfd: number, path: string, confined: boolean, isDir: boolean): void;
  renameAt(dirfd: number, from: string, to: string, confined: boolean, flags: number): void;
  linkAt(dirfd: number, from: string, to: string, confined: boolean): void;
  chownAt(dirfd: number, path: string, confined: boolean, uid: number, gid: number): void;
  /** BigInt ns; UTIME_NOW = -1n, UTIME_OMIT = -2n. */
  utimensAt(dirfd: number, path: string, confined: boolean, atimeNs: bigint, mtimeNs: bigint): void;
  accessAt(dirfd: number, path: string, confined: boolean, mode: number): void;
  chmodAt(dirfd: number, path: string, confined: boolean, mode: number): void;
  setxattrAt(dirfd: number, path: string, confined: boolean, name: string, value: Uint8Array, flags: number): void;
  removexattrAt(dirfd: number, path: string, confined: boolean, name: string): void;
  getxattrAt(dirfd: number, path: string, confined: boolean, name: string): Buffer;
  /** NUL-terminated names. */
  listxattrAt(dirfd: number, path: string, confined: boolean): Buffer;
  futimensNs(fd: number, atimeNs: bigint, mtimeNs: bigint): void;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /** Takes an exclusive flock(2) without waiting: false when another open file holds it. */
  tryLock(fd: number): boolean;
  /** The first offset at or after `offset` holding data (SEEK_DATA); throws ENXIO when none does. */
  seekData(fd: number, offset: number): number;
  /** Flushes the whole filesystem holding fd to disk. */
  syncfs(fd: number): void;
  /** Asks for a pipe of `bytes` (F_SETPIPE_SZ); returns its capacity now (-1: not a pipe). */
  setPipeSize(fd: number, bytes: number): number;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const posix: Posix = require(path.join(__dirname, '..', '..', 'shared', 'native', 'build', 'Release', 'posix.node'));

/** fallocate(2) mode bits. */
export const Falloc = { KEEP_SIZE: 0x01, PUNCH_HOLE: 0x02, ZERO_RANGE: 0x10 } as const;

/** renameat2(2) flags. */
export const Rename = { NOREPLACE: 1, EXCHANGE: 2 } as const;

/** Splits llistxattr's NUL-terminated list. */
export function xattrNames(list: Buffer): string[] {
  return list.toString('utf8').split('\0').filter((n) => n.length > 0);
}
