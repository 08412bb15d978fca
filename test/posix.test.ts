import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Rename } from '../shared/posix';
import { Tree } from '../shared/tree';
import { BIN, dirs, exitOf, startPipeline, tempDir, treeDiff, unmount } from './harness';


const A = { uid: 1001, gid: 1001, groups: [] as number[] };
const B = { uid: 1002, gid: 1002, groups: [2000] };
type User = typeof A;

// Runs in a child as another user: each action is JS evaluated with fs, R (the root) and st() in scope.
const RUNNER = `
const fs = require('fs');
const [R, actions] = [process.argv[1], JSON.parse(process.argv[2])];
const st = (p) => { const s = fs.lstatSync(R + '/' + p); return [(s.mode).toString(8), s.uid, s.gid, s.nlink, s.size].join(' '); };
// A command's failure as the errno text it printed, without the path (which differs between roots).
const run = (cmd, ...args) => { try { require('child_process').execFileSync(cmd, args, { stdio: 'pipe' }); return 'ok'; } catch (e) { return String(e.stderr).trim().split(': ').pop(); } };
const out = {};
for (const [name, code] of actions) {
  try { const v = new Function('fs', 'R', 'st', 'run', code)(fs, R, st, run); out[name] = v === undefined ? 'ok' : v; }
  catch (e) { out[name] = e.code || String(e); }
}
process.stdout.write(JSON.stringify(out));`;

function runAs(user: User, root: string, actions: [string, string][]): Record<string, string> {
  const groups = user.groups.length ? ['--groups', user.groups.join(',')] : ['--clear-groups'];
  const out = execFileSync('setpriv', ['--reuid', String(user.uid), '--regid', String(user.gid), ...groups, process.execPath, '-e', RUNNER, root, JSON.stringify(actions)], { encoding: 'utf8' });
  return JSON.parse(out) as Record<string, string>;
}

/** The same starting tree, made as root: [name, content (a file) or null (a directory), mode, uid, gid]. */
const FIXTURE: [string, string | null, number, number, number][] = [
  ['private', 'secret', 0o600, 0, 0],
  ['shared', null, 0o777, 0, 0],
  ['sticky', null, 0o1777, 0, 0],
  ['sticky/a-file', 'a', 0o666, A.uid, A.gid],
  ['setgid', null, 0o2777, 0, 2000],
  ['ro', 'read only', 0o444, A.uid, A.gid],
  ['closed', null, 0o555, 0, 0],
  ['suid', 'x', 0o4777, A.uid, A.gid],
  ['open-to-all', 'x', 0o666, 0, 0],
];

function fixture(root: string): void {
  for (const [name, content, mode, uid, gid] of FIXTURE) {
    const p = path.join(root, name);
    if (content === null) fs.mkdirSync(p);
    else fs.writeFileSync(p, content);
    fs.chownSync(p, uid, gid);
    fs.chmodSync(p, mode); // after chown, which clears setuid/setgid
  }
}

const asA: [string, string][] = [
  ['read private', `return fs.readFileSync(R + '/private', 'utf8')`],
  ['write private', `fs.writeFileSync(R + '/private', 'x')`],
  ['list private dir entry', `return fs.readdirSync(R).includes('private')`],
  ['create in shared', `fs.writeFileSync(R + '/shared/a', 'hello'); return st('shared/a')`],
  ['mkdir in shared', `fs.mkdirSync(R + '/shared/ad', 0o750); return st('shared/ad')`],
  ['symlink in shared', `fs.symlinkSync('a', R + '/shared/as'); return st('shared/as')`],
  ['link in shared', `fs.linkSync(R + '/shared/a', R + '/shared/a2'); return st('shared/a') + ' | ' + st('shared/a2')`],
  ['create in root dir', `fs.writeFileSync(R + '/nope', '')`],
  ['create in closed dir', `fs.writeFileSync(R + '/closed/nope', '')`],
  ['truncate read-only own file', `fs.truncateSync(R + '/ro', 0)`],
  ['open read-only for writing', `fs.openSync(R + '/ro', 'r+')`],
  ['chmod own file', `fs.chmodSync(R + '/ro', 0o644); return st('ro')`],
  ['write after chmod', `fs.writeFileSync(R + '/ro', 'now writable'); return st('ro')`],
  ['chmod not own', `fs.chmodSync(R + '/private', 0o777)`],
  ['chown own file to B', `fs.chownSync(R + '/ro', ${B.uid}, -1)`],
  ['chgrp own file to a group A is not in', `fs.chownSync(R + '/ro', -1, 2000)`],
  ['utimes explicit on not-own writable', `fs.utimesSync(R + '/open-to-all', 1, 2)`],
  ['touch (UTIME_NOW) on not-own writable', `return run('touch', R + '/open-to-all')`],
  ['touch -m with nanoseconds on own file', `run('touch', '-m', '-d', '2001-02-03 04:05:06.123456789', R + '/shared/a'); const s = fs.statSync(R + '/shared/a', { bigint: true }); return String(s.mtimeNs % 1000000000n)`],
  ['rmdir non-empty', `fs.writeFileSync(R + '/shared/ad/f', ''); fs.rmdirSync(R + '/shared/ad')`],
  ['rename into closed dir', `fs.renameSync(R + '/shared/a2', R + '/closed/x')`],
  ['user xattr on not-own writable file', `return run('setfattr', '-n', 'user.k', '-v', 'v', R + '/open-to-all')`],
  ['user xattr on not-own private file', `return run('setfattr', '-n', 'user.k', '-v', 'v', R + '/private')`],
  ['trusted xattr as a user', `return run('setfattr', '-n', 'trusted.k', '-v', 'v', R + '/shared/a')`],
  ['rename own file over itself', `fs.renameSync(R + '/shared/a', R + '/shared/a'); return st('shared/a')`],
  ['unlink own in sticky', `fs.writeFileSync(R + '/sticky/a-own', 'x'); return st('sticky/a-own')`],
];

const asB: [string, string][] = [
  ['read private', `return fs.readFileSync(R + '/private', 'utf8')`],
  ['unlink A file in sticky', `fs.unlinkSync(R + '/sticky/a-file')`],
  ['rename A file in sticky', `fs.renameSync(R + '/sticky/a-file', R + '/sticky/b-file')`],
  ['write A file in sticky (mode 666)', `fs.appendFileSync(R + '/sticky/a-file', 'b'); return st('sticky/a-file')`],
  ['create in setgid dir', `fs.writeFileSync(R + '/setgid/bf', ''); return st('setgid/bf')`],
  ['mkdir in setgid dir', `fs.mkdirSync(R + '/setgid/bd'); return st('setgid/bd')`],
  ['chgrp own file to a group B is in', `fs.writeFileSync(R + '/shared/b', ''); fs.chownSync(R + '/shared/b', -1, 2000); return st('shared/b')`],
  ['write to setuid file of A', `fs.appendFileSync(R + '/suid', 'y'); return st('suid')`],
  ['unlink in shared (not sticky)', `fs.unlinkSync(R + '/shared/a2'); return st('shared/a')`],
  ['rename over A file in shared', `fs.writeFileSync(R + '/shared/b2', 'b2'); fs.renameSync(R + '/shared/b2', R + '/shared/a'); return st('shared/a')`],
  ['read A dir with mode 750', `return fs.readdirSync(R + '/shared/ad').length`],
];

/** Modes, owners, link counts, sizes and types of every entry (times differ between two trees made at different moments). */
function shape(root: string): string[] {
  return execFileSync('find', ['.', '-printf', '%p %M %U %G %n %s -> %l\\n'], { cwd: root, encoding: 'utf8' }).split('\n').filter(Boolean).sort();
}

test('POSIX as other users through --allow-other: every result equals the same operation on a plain directory', { timeout: 120_000 }, async (t) => {
  const base = tempDir(t, 'posix');
  fs.chmodSync(base, 0o755);
  const [plain, store, mnt, replica] = dirs(base, 'plain', 'store', 'mnt', 'replica');
  const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.mirror, '--quiet', replica!], ['--allow-other']);
  fixture(plain!);
  fixture(mnt!);
  for (const [user, actions] of [[A, asA], [B, asB]] as const) {
    const want = runAs(user, plain!, actions);
    const got = runAs(user, mnt!, actions);
    for (const [name] of actions) assert.equal(got[name], want[name], `uid ${user.uid}: ${name}`);
    t.diagnostic(`uid ${user.uid}: ${JSON.stringify(got)}`);
  }
  assert.deepEqual(shape(mnt!), shape(plain!), 'the trees have the same modes, owners, links, sizes');
  // renameat2 flags: the VFS refuses NOREPLACE over an existing name itself (as on the store); the
  // rest never reaches libfuse 2.9 (protocol 7.19), so the kernel answers EINVAL (README lists it).
  const r = (n: string) => path.join(mnt!, n);
  fs.writeFileSync(r('r1'), '1');
  fs.writeFileSync(r('r2'), '2');
  const mount = new Tree(mnt!, false);
  try {
    assert.throws(() => mount.rename('r1', 'r2', Rename.NOREPLACE), /EEXIST/);
    assert.throws(() => mount.rename('r1', 'new', Rename.NOREPLACE), /EINVAL/);
    assert.throws(() => mount.rename('r1', 'r2', Rename.EXCHANGE), /EINVAL/);
  } finally {
    mount.close(); // an open descriptor would hold the mount after its lazy unmount
  }
  assert.deepEqual([fs.readFileSync(r('r1'), 'utf8'), fs.readFileSync(r('r2'), 'utf8'), fs.existsSync(r('new'))], ['1', '2', false]);
  assert.ok(!fs.readdirSync(store!).some((n) => n.startsWith('.fuse_hidden')));
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  assert.equal(treeDiff(store!, replica!), '');
});
