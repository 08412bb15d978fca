// Types of TFS's fork of fuse-native (this directory; only what TFS uses).
declare module 'fuse-native' {
  namespace Fuse {
  type Cb = (code: number) => void;
  type ValueCb<T> = (code: number, value?: T) => void;
  interface StatLike {
    mode: number | bigint; uid: number | bigint; gid: number | bigint; size: number | bigint;
    dev?: number | bigint; nlink?: number | bigint; ino?: number | bigint; rdev?: number | bigint;
    blksize?: number | bigint; blocks?: number | bigint;
    atimeNs?: bigint; mtimeNs?: bigint; ctimeNs?: bigint;
  }
  interface Operations {
    init?(cb: Cb): void;
    destroy?(): void;
    access?(path: string, mode: number, cb: Cb): void;
    statfs?(path: string, cb: ValueCb<object>): void;
    getattr?(path: string, cb: ValueCb<StatLike>): void;
    fgetattr?(path: string | null, fd: number, cb: ValueCb<StatLike>): void;
    flush?(path: string | null, fd: number, cb: Cb): void;
    fsync?(path: string | null, datasync: number, fd: number, cb: Cb): void;
    fsyncdir?(path: string, datasync: number, fd: number, cb: Cb): void;
    readdir?(path: string, cb: (code: number, names?: string[], stats?: StatLike[]) => void): void;
    truncate?(path: string, size: number, cb: Cb): void;
    ftruncate?(path: string | null, fd: number, size: number, cb: Cb): void;
    utimens?(path: string, atime: bigint, mtime: bigint, cb: Cb): void;
    readlink?(path: string, cb: ValueCb<string>): void;
    chown?(path: string, uid: number, gid: number, cb: Cb): void;
    chmod?(path: string, mode: number, cb: Cb): void;
    mknod?(path: string, mode: number, dev: number, cb: Cb): void;
    setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Cb): void;
    getxattr?(path: string, name: string, position: number, cb: ValueCb<Buffer>): void;
    listxattr?(path: string, cb: ValueCb<string[]>): void;
    removexattr?(path: string, name: string, cb: Cb): void;
    open?(path: string, flags: number, cb: ValueCb<number>): void;
    read?(path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb): void;
    write?(path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb): void;
    release?(path: string | null, fd: number, cb: Cb): void;
    create?(path: string, mode: number, flags: number, cb: ValueCb<number>): void;
    unlink?(path: string, cb: Cb): void;
    rename?(src: string, dest: string, cb: Cb): void;
    link?(src: string, dest: string, cb: Cb): void;
    symlink?(target: string, path: string, cb: Cb): void;
    mkdir?(path: string, mode: number, cb: Cb): void;
    rmdir?(path: string, cb: Cb): void;
    fallocate?(path: string | null, fd: number, mode: number, offset: number, length: number, cb: Cb): void;
  }
  interface Options {
    force?: boolean; mkdir?: boolean; timeout?: number | false; debug?: boolean;
    allowOther?: boolean; defaultPermissions?: boolean; autoUnmount?: boolean;
    fsname?: string; subtype?: string; attrTimeout?: number; entryTimeout?: number; negativeTimeout?: number;
    bigWrites?: boolean; maxWrite?: number; hardRemove?: boolean; useIno?: boolean; options?: string[];
  }
  /** The store order, the frame output and the native data path (order.c). One journal per process. */
  interface Native {
    /** Enters / leaves a store-order section on the main thread (nested sections count once). */
    orderEnter(): void;
    orderLeave(): void;
    /** Makes fd the frame output (kind 0 other, 1 pipe, 2 socket); returns the memory of the next sequence number (u64). */
    outOpen(fd: number, kind: number): ArrayBuffer;
    /** Writes one frame whole (its parts in order); 0, or the errno that broke the output. */
    outWrite(parts: Uint8Array[], seq: bigint): number;
    /** [errno that broke the output or 0, last sequence number known taken or -1n, first written and not known taken or -1n]. */
    outStatus(): [number, bigint, bigint];
    /** Whether writes on announced handles may be handled natively. */
    nativeWrites(on: boolean): void;
    /** fd is an open file of the mount, with the handle id frames use; `announced` once its OPEN is out. */
    handle(fd: number, id: number, append: boolean, announced: boolean): void;
    /** fd is about to be closed. */
    handleClosed(fd: number): void;
    /** The store's root directory: getattr, flush, getxattr, listxattr, readlink and reads are answered from it natively. */
    storeRoot(fd: number): void;
    /** Lends the spool's segment to native frames (segFd -1: a spool without a segment yet). */
    spoolLend(segFd: number, idxFd: number, first: bigint, size: number, last: bigint, limit: number): void;
    /** No spool (or a broken one): native frames only go out. */
    spoolNone(): void;
    /** Takes the segment back: [size, last seq, native appends, errno of a failed append or 0, that frame or null]. */
    spoolReclaim(): [number, bigint, number, number, Buffer | null];
  }
  }
  class Fuse {
    constructor(mnt: string, ops: Fuse.Operations, opts?: Fuse.Options);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    caller(): { uid: number; gid: number; pid: number; umask: number };
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static UTIME_NOW: bigint;
    static UTIME_OMIT: bigint;
    static native: Fuse.Native;
  }
  export = Fuse;
}
