import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, dirs, exitOf, isMounted, start, startJournal, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';

// The mount must never lose a write, and must let nobody in who does not belong: each test here
// drives the real commands the way a user (or an attacker) would.

test('a journal whose stderr and stdout readers are both gone keeps serving; programs never notice', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'stderr');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  // stdout: a reader that takes one chunk and goes; stderr: a pipe the test closes once mounted,
  // as when the ssh client of `ssh host tfs-journal ... | tfs-mirror ...` goes away.
  const reader = start(t, 'head', ['-c', '1'], { stdio: ['pipe', 'ignore', 'ignore'] });
  const journal = spawn(process.execPath, [BIN.journal, store!, mnt!], { stdio: ['ignore', reader.child.stdin!, 'pipe'] });
  reader.child.stdin!.destroy();
  t.after(() => journal.kill('SIGKILL'));
  let err = '';
  journal.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(() => /mounted /.test(err), 10_000, 'the mount');
  journal.stderr!.destroy();
  const exited = new Promise<number | null>((resolve) => journal.on('exit', (code) => resolve(code)));
  // Enough changes for the stdout reader to be gone and the journal to log about it (on a dead stderr).
  for (let i = 0; i < 200; i++) fs.appendFileSync(path.join(mnt!, 'log'), `line ${i}\n`);
  await exitOf(reader);
  for (let i = 200; i < 400; i++) fs.appendFileSync(path.join(mnt!, 'log'), `line ${i}\n`);
  assert.equal(journal.exitCode, null, 'the journal is alive');
  assert.equal(fs.readFileSync(path.join(store!, 'log'), 'utf8').split('\n').length, 401, 'every line is on the store');
  unmount(mnt!);
  assert.equal(await exited, 1, 'exits 1: changes were not delivered');
});

test('a journal that dies leaves a dead mount: writes through MNT fail (ENOTCONN), none lands in the bare directory; the next start clears it', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'dies');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const devnull = fs.openSync('/dev/null', 'w');
  const journal = await startJournal(t, store!, mnt!, devnull);
  fs.writeFileSync(path.join(mnt!, 'before'), 'kept');
  journal.child.kill('SIGKILL');
  await exitOf(journal);
  let failures = 0;
  for (let i = 0; i < 200; i++) {
    try {
      fs.appendFileSync(path.join(mnt!, 'log'), `line ${i}\n`);
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, 'ENOTCONN');
      failures++;
    }
  }
  assert.equal(failures, 200, 'every write failed loudly');
  assert.ok(isMounted(mnt!), 'the dead mount is still there');
  const again = await startJournal(t, store!, mnt!, devnull);
  fs.closeSync(devnull);
  assert.match(again.stderr(), /^tfs-journal: clearing the dead mount left at .* \(ENOTCONN\)$/m);
  assert.doesNotMatch(again.stderr(), /tfs-journal: journal:/, 'one prefix per line');
  assert.deepEqual(fs.readdirSync(mnt!), ['before']);
  unmount(mnt!);
  await exitOf(again);
  assert.deepEqual(fs.readdirSync(mnt!), [], 'nothing landed in the bare mountpoint directory');
});

test('a mount that fails writes nothing to stdout, says which argument is wrong, and exits 1', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'nomount');
  const [store, mnt, full] = dirs(base, 'store', 'mnt', 'full');
  fs.writeFileSync(path.join(full!, 'something'), 'x');
  fs.symlinkSync(store!, path.join(base, 'storelink'));
  fs.mkdirSync(path.join(store!, 'inner'));
  const run = (...args: string[]) => {
    const out = path.join(base, 'out');
    const fd = fs.openSync(out, 'w');
    const r = spawnSync(process.execPath, [BIN.journal, ...args], { stdio: ['ignore', fd, 'pipe'], encoding: 'utf8', timeout: 20_000 });
    fs.closeSync(fd);
    return { status: r.status, stderr: r.stderr, stdout: fs.statSync(out).size };
  };
  const missing = run(path.join(base, 'nope'), mnt!);
  assert.deepEqual([missing.status, missing.stdout], [1, 0]);
  assert.match(missing.stderr, /STORE .*nope: no such directory \[TFS_MOUNT_FAILED\]/);
  const noMnt = run(store!, path.join(base, 'nope'));
  assert.match(noMnt.stderr, /MNT .*nope: no such directory \[TFS_MOUNT_FAILED\]/);
  const notEmpty = run(store!, full!);
  assert.deepEqual([notEmpty.status, notEmpty.stdout], [1, 0], notEmpty.stderr);
  assert.match(notEmpty.stderr, /TFS_MOUNT_FAILED/);
  const nested = run(path.join(base, 'storelink'), path.join(store!, 'inner'));
  assert.deepEqual([nested.status, nested.stdout], [1, 0]);
  assert.match(nested.stderr, /must not contain each other \[TFS_MOUNT_FAILED\]/);
  assert.equal(isMounted(path.join(store!, 'inner')), false);
});

/** Runs a shell command as uid/gid 1001 with no supplementary groups. */
function asUser(script: string): { status: number | null; out: string } {
  const r = spawnSync('setpriv', ['--reuid', '1001', '--regid', '1001', '--clear-groups', 'sh', '-c', script], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('-o allow_other (the raw route) checks every caller\'s access like --allow-other; uid=/gid= overrides and auto_unmount are refused', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'allow');
  fs.chmodSync(base, 0o755);
  const [store, mnt] = dirs(base, 'store', 'mnt');
  fs.writeFileSync(path.join(store!, 'secret'), 'root only');
  fs.chmodSync(path.join(store!, 'secret'), 0o600);
  fs.writeFileSync(path.join(store!, 'public'), 'for all');
  fs.chmodSync(path.join(store!, 'public'), 0o644);
  for (const refused of [['-o', 'uid=33,gid=33,allow_other'], ['-o', 'auto_unmount'], ['-o', 'umask=0']]) {
    const r = spawnSync(process.execPath, [BIN.journal, ...refused, store!, mnt!], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /is refused: .*\[TFS_USAGE\]/);
  }
  const devnull = fs.openSync('/dev/null', 'w');
  const journal = await startJournal(t, store!, mnt!, devnull, ['-o', 'allow_other,fsname=web']);
  fs.closeSync(devnull);
  const read = asUser(`cat '${mnt}/secret'`);
  assert.notEqual(read.status, 0);
  assert.match(read.out, /Permission denied/);
  const write = asUser(`echo pwned > '${mnt}/secret'`);
  assert.notEqual(write.status, 0);
  assert.match(write.out, /Permission denied/);
  assert.equal(asUser(`cat '${mnt}/public'`).out, 'for all');
  assert.match(asUser(`echo x > '${mnt}/new'`).out, /Permission denied/, 'the store root is 0755 root: no creating in it');
  assert.equal(fs.readFileSync(path.join(store!, 'secret'), 'utf8'), 'root only');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0);
});

test('a path of PATH_MAX-1 bytes through the mount, replayed into a replica that lies deep, equals the store', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'long');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  // The replica's own path is long: a mirror that prefixed it would exceed PATH_MAX.
  const replica = path.join(base, 'r'.repeat(200), 'r'.repeat(200), 'replica');
  fs.mkdirSync(replica, { recursive: true });
  const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.mirror, '--quiet', replica]);
  // What pjdfstest's */03.t do: build a path of exactly PATH_MAX-1 bytes relative to the mount.
  const parts: string[] = [];
  while (4095 - parts.length * 201 > 255) parts.push('d'.repeat(200));
  const dir = parts.join('/');
  const file = `${dir}/${'f'.repeat(4095 - dir.length - 1)}`;
  assert.equal(file.length, 4095);
  execFileSync('mkdir', ['-p', dir], { cwd: mnt! });
  execFileSync('sh', ['-c', `echo long > ${file} && chmod 600 ${file} && mv ${file} ${dir}/moved && ln ${dir}/moved ${file}`], { cwd: mnt! });
  assert.equal(execFileSync('cat', [file], { cwd: store!, encoding: 'utf8' }), 'long\n');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  assert.equal(execFileSync('cat', [file], { cwd: replica, encoding: 'utf8' }), 'long\n');
  // rsync itself cannot compare below so deep a prefix: the replica moves up to be compared.
  const moved = path.join(base, 'replica');
  fs.renameSync(replica, moved);
  assert.equal(treeDiff(store!, moved), '');
});
