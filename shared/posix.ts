import path from 'node:path';

/** System calls Node's fs lacks (shared/native/posix.c). Errors carry code/errno/syscall like Node's. */
export interface Posix {
  /** Sets atime and mtime (BigInt ns; UTIME_NOW = -1n, UTIME_OMIT = -2n) without following a final symlink. */
  lutimensNs(path: string, atimeNs: bigint, mtimeNs: bigint): void;
  futimensNs(fd: number, atimeNs: bigint, mtimeNs: bigint): void;
  mknod(path: string, mode: number, rdev: number): void;
  lsetxattr(path: string, name: string, value: Uint8Array, flags: number): void;
  lgetxattr(path: string, name: string): Buffer;
  /** NUL-terminated names. */
  llistxattr(path: string): Buffer;
  lremovexattr(path: string, name: string): void;
  renameat2(from: string, to: string, flags: number): void;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const posix: Posix = require(path.join(__dirname, '..', '..', 'shared', 'native', 'build', 'Release', 'posix.node'));

/** fallocate(2) mode bits. */
export const Falloc = { KEEP_SIZE: 0x01, PUNCH_HOLE: 0x02, ZERO_RANGE: 0x10 } as const;

/** Splits llistxattr's NUL-terminated list. */
export function xattrNames(list: Buffer): string[] {
  return list.toString('utf8').split('\0').filter((n) => n.length > 0);
}
