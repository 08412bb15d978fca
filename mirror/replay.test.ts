import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FrameType } from '../shared/frame';
import { Op, Times } from '../shared/ops';
import { TfsError } from '../shared/errors';
import { Replayer } from './replay';

let dir: string;
let replica: string;
let outside: string;
const T: Times = [1_600_000_000_123_456_789n, 1_500_000_000_987_654_321n];
const P: Times = [1_400_000_000_000_000_001n, 1_400_000_000_000_000_002n];
let seq = 0n;
const op = <O extends Omit<Op, 'seq'>>(o: O): Op => ({ ...o, seq: ++seq }) as unknown as Op;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-replay-'));
  replica = path.join(dir, 'replica');
  outside = path.join(dir, 'outside');
  fs.mkdirSync(replica);
  fs.mkdirSync(outside);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function mtimeNs(p: string): bigint {
  return fs.lstatSync(p, { bigint: true }).mtimeNs;
}

test('create, open, write, release: content, mode, owner and nanosecond times as the frames say', () => {
  const r = new Replayer(replica);
  r.apply(op({ type: FrameType.CREATE, path: 'f', mode: 0o100640, uid: 12, gid: 34, times: T, parentTimes: P }));
  r.apply(op({ type: FrameType.OPEN, handle: 1, path: 'f' }));
  r.apply(op({ type: FrameType.WRITE, handle: 1, offset: 3, data: Buffer.from('xyz') }));
  r.apply(op({ type: FrameType.RELEASE, handle: 1, times: T }));
  const st = fs.lstatSync(path.join(replica, 'f'), { bigint: true });
  assert.equal(fs.readFileSync(path.join(replica, 'f'), 'latin1'), '\0\0\0xyz');
  assert.equal(Number(st.mode), 0o100640);
  assert.equal(Number(st.uid), 12);
  assert.equal(Number(st.gid), 34);
  assert.equal(st.mtimeNs, T[1]);
  assert.equal(st.atimeNs, T[0]);
  assert.equal(mtimeNs(replica), P[1]);
});

test('every namespace op applies, and applying each one again right after changes nothing', () => {
  const ops: Op[] = [
    op({ type: FrameType.MKDIR, path: 'd', mode: 0o42755, uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.CREATE, path: 'd/a', mode: 0o104755, uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.LINK, path: 'd/b', from: 'd/a', parentTimes: P }),
    op({ type: FrameType.SYMLINK, path: 's', target: '../elsewhere', uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.MKNOD, path: 'fifo', mode: 0o10600, rdev: 0, uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.RENAME, from: 'd/a', path: 'd/c', flags: 0, times: T, fromParentTimes: P, parentTimes: P }),
    op({ type: FrameType.SETXATTR, path: 'd/c', name: 'user.k', flags: 1, data: Buffer.from('v') }),
    op({ type: FrameType.REMOVEXATTR, path: 'd/c', name: 'user.gone' }),
    op({ type: FrameType.TRUNCATE, path: 'd/c', size: 10, times: T }),
    op({ type: FrameType.CHMOD, path: 'd/c', mode: 0o104711 }),
    op({ type: FrameType.CHOWN, path: 'd/c', uid: 5, gid: 6, mode: 0o104711 }),
    op({ type: FrameType.UTIMENS, path: 's', times: T }),
    op({ type: FrameType.UNLINK, path: 'd/b', parentTimes: P }),
    op({ type: FrameType.MKDIR, path: 'e', mode: 0o40700, uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.RMDIR, path: 'e', parentTimes: P }),
  ];
  const r = new Replayer(replica, () => {}, { preservePrivileges: true });
  for (const o of ops) {
    r.apply(o);
    r.apply(o);
  }
  const c = fs.lstatSync(path.join(replica, 'd/c'), { bigint: true });
  assert.equal(Number(c.mode), 0o104711);
  assert.equal(Number(c.uid), 5);
  assert.equal(c.size, 10n);
  assert.equal(Number(c.nlink), 1);
  assert.equal(fs.lstatSync(path.join(replica, 'd')).mode, 0o42755);
  assert.equal(fs.readlinkSync(path.join(replica, 's')), '../elsewhere');
  assert.equal(mtimeNs(path.join(replica, 's')), T[1]);
  assert.ok(fs.lstatSync(path.join(replica, 'fifo')).isFIFO());
  assert.equal(fs.existsSync(path.join(replica, 'e')), false);
  assert.equal(mtimeNs(path.join(replica, 'd')), P[1]);
});

test('writes through a handle follow its file across a rename, and after an unlink', () => {
  const r = new Replayer(replica);
  r.apply(op({ type: FrameType.CREATE, path: 'a', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: P }));
  r.apply(op({ type: FrameType.LINK, path: 'keep', from: 'a', parentTimes: P }));
  r.apply(op({ type: FrameType.OPEN, handle: 9, path: 'a' }));
  r.apply(op({ type: FrameType.RENAME, from: 'a', path: 'b', flags: 0, times: T, fromParentTimes: P, parentTimes: P }));
  r.apply(op({ type: FrameType.WRITE, handle: 9, offset: 0, data: Buffer.from('one') }));
  r.apply(op({ type: FrameType.UNLINK, path: 'b', parentTimes: P }));
  r.apply(op({ type: FrameType.CREATE, path: 'b', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: P }));
  r.apply(op({ type: FrameType.WRITE, handle: 9, offset: 3, data: Buffer.from('two') }));
  r.apply(op({ type: FrameType.RELEASE, handle: 9, times: T }));
  assert.equal(fs.readFileSync(path.join(replica, 'keep'), 'utf8'), 'onetwo');
  assert.equal(fs.readFileSync(path.join(replica, 'b'), 'utf8'), '');
  const changes = r.takeHandleChanges();
  assert.equal(changes.get(9), undefined);
  assert.ok(changes.has(9));
});

test('a path through a symlink in the replica is refused and nothing outside is touched', () => {
  fs.symlinkSync(outside, path.join(replica, 'link'));
  const r = new Replayer(replica);
  const attempts: Op[] = [
    op({ type: FrameType.CREATE, path: 'link/evil', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.MKDIR, path: 'link/d', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: P }),
    op({ type: FrameType.UNLINK, path: 'link/x', parentTimes: P }),
    op({ type: FrameType.RENAME, from: 'link', path: 'link/y', flags: 0, times: T, fromParentTimes: P, parentTimes: P }),
    op({ type: FrameType.SETXATTR, path: 'link/x', name: 'user.a', flags: 0, data: Buffer.from('1') }),
  ];
  fs.writeFileSync(path.join(outside, 'x'), 'precious');
  for (const a of attempts) {
    assert.throws(() => r.apply(a), (e: unknown) => e instanceof TfsError && e.code === 'TFS_HOSTILE_PATH' && e.message.includes(`frame #${a.seq}`));
  }
  assert.deepEqual(fs.readdirSync(outside), ['x']);
  assert.equal(fs.readFileSync(path.join(outside, 'x'), 'utf8'), 'precious');
});

test('a final symlink is never followed: chmod refuses, truncate and open fail, utimens touches the link', () => {
  fs.writeFileSync(path.join(outside, 'target'), 'keep');
  fs.chmodSync(path.join(outside, 'target'), 0o600);
  fs.symlinkSync(path.join(outside, 'target'), path.join(replica, 'l'));
  const r = new Replayer(replica);
  assert.throws(() => r.apply(op({ type: FrameType.CHMOD, path: 'l', mode: 0o777 })), (e: unknown) => e instanceof TfsError && e.code === 'TFS_APPLY_FAILED');
  const hostile = (e: unknown) => e instanceof TfsError && e.code === 'TFS_HOSTILE_PATH' && /ELOOP/.test(e.message);
  assert.throws(() => r.apply(op({ type: FrameType.TRUNCATE, path: 'l', size: 0, times: T })), hostile);
  assert.throws(() => r.apply(op({ type: FrameType.OPEN, handle: 1, path: 'l' })), hostile);
  r.apply(op({ type: FrameType.UTIMENS, path: 'l', times: T }));
  assert.equal(fs.readFileSync(path.join(outside, 'target'), 'utf8'), 'keep');
  assert.equal(fs.statSync(path.join(outside, 'target')).mode & 0o777, 0o600);
  assert.notEqual(mtimeNs(path.join(outside, 'target')), T[1]);
  // A CREATE over it replaces the link (a replica that diverged), never writes through it.
  r.apply(op({ type: FrameType.CREATE, path: 'l', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: P }));
  assert.ok(fs.lstatSync(path.join(replica, 'l')).isFile());
  assert.equal(fs.readFileSync(path.join(outside, 'target'), 'utf8'), 'keep');
});

test('a write to a handle never opened is refused, naming the frame', () => {
  const r = new Replayer(replica);
  const w = op({ type: FrameType.WRITE, handle: 77, offset: 0, data: Buffer.from('x') });
  assert.throws(() => r.apply(w), (e: unknown) => e instanceof TfsError && e.code === 'TFS_UNKNOWN_HANDLE' && e.message.includes(`#${w.seq}`));
});

test('restored handles reopen their file by path after a restart', () => {
  fs.writeFileSync(path.join(replica, 'f'), 'abc');
  const r = new Replayer(replica);
  r.restoreHandles(new Map([[3, 'f'], [4, null]]));
  r.apply(op({ type: FrameType.WRITE, handle: 3, offset: 1, data: Buffer.from('Z') }));
  r.apply(op({ type: FrameType.WRITE, handle: 4, offset: 0, data: Buffer.from('lost with its name') }));
  r.close();
  assert.equal(fs.readFileSync(path.join(replica, 'f'), 'utf8'), 'aZc');
});

test('by default setuid/setgid bits on files and file capabilities are dropped, once noted each; directories keep setgid', () => {
  const notes: string[] = [];
  const r = new Replayer(replica, (m) => notes.push(m));
  r.apply(op({ type: FrameType.CREATE, path: 'su', mode: 0o104755, uid: 0, gid: 0, times: T, parentTimes: P }));
  r.apply(op({ type: FrameType.CREATE, path: 'sg', mode: 0o102755, uid: 0, gid: 0, times: T, parentTimes: P }));
  r.apply(op({ type: FrameType.CHMOD, path: 'sg', mode: 0o106777 }));
  // A frame that claims a directory's type bits for a file does not keep its setuid bit.
  r.apply(op({ type: FrameType.CHMOD, path: 'su', mode: 0o44755 }));
  r.apply(op({ type: FrameType.CHOWN, path: 'su', uid: 0, gid: 0, mode: 0o104755 }));
  r.apply(op({ type: FrameType.MKDIR, path: 'shared', mode: 0o42775, uid: 0, gid: 0, times: T, parentTimes: P }));
  r.apply(op({ type: FrameType.SETXATTR, path: 'su', name: 'security.capability', flags: 0, data: Buffer.from('01000002c000000000000000000000000000000000', 'hex') }));
  r.apply(op({ type: FrameType.SETXATTR, path: 'su', name: 'user.fine', flags: 0, data: Buffer.from('yes') }));
  assert.equal(fs.statSync(path.join(replica, 'su')).mode, 0o100755);
  assert.equal(fs.statSync(path.join(replica, 'sg')).mode, 0o100777);
  assert.equal(fs.statSync(path.join(replica, 'shared')).mode, 0o42775);
  assert.throws(() => execFileSync('getfattr', ['-n', 'security.capability', path.join(replica, 'su')], { stdio: 'pipe' }));
  assert.match(execFileSync('getfattr', ['-d', path.join(replica, 'su')], { encoding: 'utf8' }), /user.fine="yes"/);
  assert.equal(notes.filter((n) => /setuid\/setgid bits are not applied .*--preserve-privileges/.test(n)).length, 1, notes.join('\n'));
  assert.equal(notes.filter((n) => /file capabilities \(security.capability\) are not applied/.test(n)).length, 1, notes.join('\n'));
});

test('device nodes are refused (TFS_REFUSED, naming the frame) unless allowed; fifos are fine', () => {
  const dev = op({ type: FrameType.MKNOD, path: 'mem', mode: 0o20666, rdev: (1 << 8) | 1, uid: 0, gid: 0, times: T, parentTimes: P });
  assert.throws(() => new Replayer(replica).apply(dev), (e: unknown) => e instanceof TfsError && e.code === 'TFS_REFUSED' && e.message.includes(`frame #${dev.seq}`) && /character device \(1:1\).*--allow-devices/.test(e.message));
  const disk = op({ type: FrameType.MKNOD, path: 'disk', mode: 0o60660, rdev: 8 << 8, uid: 0, gid: 0, times: T, parentTimes: P });
  assert.throws(() => new Replayer(replica).apply(disk), (e: unknown) => e instanceof TfsError && e.code === 'TFS_REFUSED');
  assert.deepEqual(fs.readdirSync(replica), []);
  new Replayer(replica).apply(op({ type: FrameType.MKNOD, path: 'fifo', mode: 0o10644, rdev: 0, uid: 0, gid: 0, times: T, parentTimes: P }));
  new Replayer(replica, () => {}, { allowDevices: true }).apply(dev);
  const st = fs.lstatSync(path.join(replica, 'mem'));
  assert.ok(st.isCharacterDevice());
  assert.equal(st.rdev, (1 << 8) | 1);
});
