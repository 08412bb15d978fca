// A filesystem that can lose power: `node crashfs.js BACKING MNT`, a FUSE passthrough of BACKING
// that remembers how to undo every change not yet made durable by a sync. Any fsync or fsyncdir
// is a barrier that makes everything before it durable (as one journal commit does on ext4).
// SIGUSR2 cuts the power: every change after the last barrier is undone on BACKING (file data,
// sizes, new and removed entries, renames, modes, owners, times, xattrs), then the mount goes
// away. SIGTERM unmounts without a cut; SIGUSR1 writes how many changes a cut would undo now into
// BACKING.pending. A test fixture for power cuts under a replica.
import fs from 'node:fs';
import path from 'node:path';
import Fuse from 'fuse-native';
import { posix } from '../shared/posix';
import { Tree } from '../shared/tree';

const [backing, mnt] = process.argv.slice(2) as [string, string];
const trash = `${backing}.trash`;
const tree = new Tree(backing, false);
const rel = (p: string) => p.slice(1);
fs.mkdirSync(trash, { recursive: true });
let trashed = 0;

type Undo = () => void;
let undo: Undo[] = [];
let barriers = 0;
const real = (p: string) => path.join(backing, p);
const parentOf = (p: string) => path.dirname(p);

function barrier(): void {
  undo = [];
  closeUndoFds();
  barriers++;
  for (const name of fs.readdirSync(trash)) fs.rmSync(path.join(trash, name), { recursive: true, force: true });
}

/** Undo of the times of a directory whose entries are about to change. */
function keepDirTimes(p: string): void {
  const st = fs.lstatSync(real(p), { bigint: true });
  undo.push(() => fs.utimesSync(real(p), Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9));
}

/** Moves an entry aside (it can come back), as unlink and replacing renames do. */
function setAside(p: string): void {
  const aside = path.join(trash, String(trashed++));
  fs.renameSync(real(p), aside);
  undo.push(() => fs.renameSync(aside, real(p)));
}

/**
 * Descriptors of the files whose content changed since the last barrier, by inode: the undo goes
 * to the file itself, whatever its names are by then (renamed, unlinked, or its name given to
 * another file), as a power cut would.
 */
const undoFds = new Map<string, number>();

function closeUndoFds(): void {
  for (const fd of undoFds.values()) fs.closeSync(fd);
  undoFds.clear();
}

/** Undo of the bytes [offset, offset + length) and the size of the file open as `fd`. */
function keepContent(fd: number, offset: number, length: number): void {
  const st = fs.fstatSync(fd);
  const key = `${st.dev}:${st.ino}`;
  let f = undoFds.get(key);
  if (f === undefined) {
    f = fs.openSync(`/proc/self/fd/${fd}`, 'r+');
    undoFds.set(key, f);
  }
  const size = st.size;
  const old = Buffer.alloc(Math.max(0, Math.min(length, size - offset)));
  if (old.length > 0) fs.readSync(fd, old, 0, old.length, offset);
  const target = f;
  undo.push(() => {
    if (old.length > 0) fs.writeSync(target, old, 0, old.length, offset);
    fs.ftruncateSync(target, size);
  });
}

function keepAttrs(p: string): void {
  const st = fs.lstatSync(real(p), { bigint: true });
  undo.push(() => {
    fs.lchownSync(real(p), Number(st.uid), Number(st.gid));
    if (!st.isSymbolicLink()) fs.chmodSync(real(p), Number(st.mode) & 0o7777);
    fs.lutimesSync(real(p), Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9);
  });
}

const errno = (err: unknown) => ((err as NodeJS.ErrnoException).errno ?? -5) as number;

function attempt<T>(cb: (code: number, value?: T) => void, f: () => T | void): void {
  let value: T | void;
  try {
    value = f();
  } catch (err) {
    return cb(errno(err));
  }
  cb(0, value === undefined ? undefined : value);
}

const ops: Fuse.Operations = {
  getattr: (p, cb) => attempt(cb, () => fs.lstatSync(real(p), { bigint: true })),
  fgetattr: (_p, fd, cb) => attempt(cb, () => fs.fstatSync(fd, { bigint: true })),
  access: (p, mode, cb) => attempt(cb, () => fs.accessSync(real(p), mode)),
  statfs: (_p, cb) => attempt(cb, () => {
    const s = fs.statfsSync(backing);
    return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 };
  }),
  readdir: (p, cb) => attempt(cb, () => fs.readdirSync(real(p))),
  readlink: (p, cb) => attempt(cb, () => fs.readlinkSync(real(p))),
  open: (p, flags, cb) =>
    attempt(cb, () => {
      if (flags & fs.constants.O_TRUNC) {
        const fd = fs.openSync(real(p), 'r');
        keepContent(fd, 0, fs.fstatSync(fd).size);
        fs.closeSync(fd);
      }
      // Read-write underneath, whatever the caller asked: the old bytes are read before a write.
      const fd = fs.openSync(real(p), (flags & ~(fs.constants.O_CREAT | 3)) | fs.constants.O_RDWR);
      return fd;
    }),
  create: (p, mode, flags, cb) =>
    attempt(cb, () => {
      keepDirTimes(parentOf(p));
      const fd = fs.openSync(real(p), (flags & ~3) | fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
      undo.push(() => fs.unlinkSync(real(p)));
      return fd;
    }),
  read: (_p, fd, buf, len, pos, cb) => {
    try {
      cb(fs.readSync(fd, buf, 0, len, pos));
    } catch (err) {
      cb(errno(err));
    }
  },
  write: (_p, fd, buf, len, pos, cb) => {
    try {
      keepContent(fd, pos, len);
      cb(fs.writeSync(fd, buf, 0, len, pos));
    } catch (err) {
      cb(errno(err));
    }
  },
  flush: (_p, _fd, cb) => cb(0),
  release: (_p, fd, cb) => attempt(cb, () => fs.closeSync(fd)),
  fsync: (_p, datasync, fd, cb) => attempt(cb, () => ((datasync ? fs.fdatasyncSync(fd) : fs.fsyncSync(fd)), barrier())),
  fsyncdir: (_p, _datasync, _fd, cb) => attempt(cb, () => barrier()),
  truncate: (p, size, cb) =>
    attempt(cb, () => {
      const fd = fs.openSync(real(p), 'r+');
      try {
        keepContent(fd, size, Number.MAX_SAFE_INTEGER);
        fs.ftruncateSync(fd, size);
      } finally {
        fs.closeSync(fd);
      }
    }),
  ftruncate: (_p, fd, size, cb) =>
    attempt(cb, () => {
      keepContent(fd, size, Number.MAX_SAFE_INTEGER);
      fs.ftruncateSync(fd, size);
    }),
  fallocate: (_p, fd, mode, offset, length, cb) =>
    attempt(cb, () => {
      keepContent(fd, offset, length);
      posix.fallocate(fd, mode, offset, length);
    }),
  utimens: (p, atime, mtime, cb) =>
    attempt(cb, () => {
      keepAttrs(p);
      tree.lutimens(rel(p), atime, mtime);
    }),
  chmod: (p, mode, cb) => attempt(cb, () => (keepAttrs(p), fs.chmodSync(real(p), mode))),
  chown: (p, uid, gid, cb) => attempt(cb, () => (keepAttrs(p), fs.lchownSync(real(p), uid === 0xffffffff ? -1 : uid, gid === 0xffffffff ? -1 : gid))),
  mkdir: (p, mode, cb) =>
    attempt(cb, () => {
      keepDirTimes(parentOf(p));
      fs.mkdirSync(real(p), mode);
      undo.push(() => fs.rmdirSync(real(p)));
    }),
  mknod: (p, mode, dev, cb) =>
    attempt(cb, () => {
      keepDirTimes(parentOf(p));
      tree.mknod(rel(p), mode, dev);
      undo.push(() => fs.unlinkSync(real(p)));
    }),
  symlink: (target, p, cb) =>
    attempt(cb, () => {
      keepDirTimes(parentOf(p));
      fs.symlinkSync(target, real(p));
      undo.push(() => fs.unlinkSync(real(p)));
    }),
  link: (from, p, cb) =>
    attempt(cb, () => {
      keepDirTimes(parentOf(p));
      fs.linkSync(real(from), real(p));
      undo.push(() => fs.unlinkSync(real(p)));
    }),
  unlink: (p, cb) =>
    attempt(cb, () => {
      keepDirTimes(parentOf(p));
      setAside(p);
    }),
  rmdir: (p, cb) =>
    attempt(cb, () => {
      if (fs.readdirSync(real(p)).length > 0) throw Object.assign(new Error('ENOTEMPTY'), { errno: -39 });
      keepDirTimes(parentOf(p));
      setAside(p);
    }),
  rename: (from, p, cb) =>
    attempt(cb, () => {
      const source = fs.lstatSync(real(from));
      const target = lstatOrNull(real(p));
      // Two names of one file: rename does nothing (POSIX).
      if (target !== null && target.ino === source.ino && target.dev === source.dev) return;
      keepDirTimes(parentOf(from));
      keepDirTimes(parentOf(p));
      if (target !== null) setAside(p);
      fs.renameSync(real(from), real(p));
      undo.push(() => fs.renameSync(real(p), real(from)));
    }),
  setxattr: (p, name, value, _position, flags, cb) =>
    attempt(cb, () => {
      let old: Buffer | null = null;
      try {
        old = tree.getxattr(rel(p), name);
      } catch {
        // none yet
      }
      tree.setxattr(rel(p), name, value, flags);
      undo.push(() => (old === null ? tree.removexattr(rel(p), name) : tree.setxattr(rel(p), name, old, 0)));
    }),
  getxattr: (p, name, _position, cb) => attempt(cb, () => tree.getxattr(rel(p), name)),
  listxattr: (p, cb) => attempt(cb, () => tree.listxattr(rel(p))),
  removexattr: (p, name, cb) =>
    attempt(cb, () => {
      const old = tree.getxattr(rel(p), name);
      tree.removexattr(rel(p), name);
      undo.push(() => tree.setxattr(rel(p), name, old, 0));
    }),
};

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch {
    return null;
  }
}

process.umask(0);
const fuse = new Fuse(mnt, ops, { timeout: false, force: false, mkdir: false, bigWrites: true, maxWrite: 131072, hardRemove: true, useIno: true, attrTimeout: 0, entryTimeout: 0, negativeTimeout: 0 });
fuse.mount((err) => {
  if (err) {
    process.stderr.write(`crashfs: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write('crashfs: mounted\n');
});
const end = (cut: boolean) => {
  if (cut) {
    const n = undo.length;
    for (const u of undo.reverse()) u();
    undo = [];
    closeUndoFds();
    process.stderr.write(`crashfs: power cut: ${n} changes undone (after ${barriers} syncs)\n`);
  }
  Fuse.unmount(mnt, () => process.exit(0));
};
process.on('SIGUSR2', () => end(true));
// SIGUSR1: how many changes a cut would undo now, into BACKING.pending.
process.on('SIGUSR1', () => fs.writeFileSync(`${backing}.pending`, `${undo.length}\n`));
// Unmounted from outside (fusermount -u): the process goes too.
ops.destroy = () => process.exit(0);
process.on('SIGTERM', () => end(false));
