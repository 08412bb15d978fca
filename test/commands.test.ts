import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FrameType } from '../shared/frame';
import { StreamBuilder } from '../shared/stream-builder';
import { BIN, dirs, exitOf, isMounted, start, startJournal, tempDir, unmount, waitFor } from './harness';

test('tfs-journal refuses to write frames to a terminal', { timeout: 30_000 }, (t) => {
  const base = tempDir(t, 'tty');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const r = spawnSync('script', ['-qec', `${process.execPath} ${BIN.journal} ${store} ${mnt}`, '/dev/null'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stdout, /refusing to write binary frames to a terminal/);
  assert.equal(isMounted(mnt!), false);
});

test('tfs-journal clears a stale mount left by a crashed daemon', { timeout: 30_000 }, async (t) => {
  const base = tempDir(t, 'stale');
  // A space in the name: the kernel lists it octal-escaped (\040) in /proc/self/mounts.
  const [store, mnt] = dirs(base, 'store', 'mount point');
  const bindfs = start(t, 'bindfs', ['-f', store!, mnt!]);
  await waitFor(() => isMounted(mnt!), 5000, 'bindfs');
  bindfs.child.kill('SIGKILL');
  await exitOf(bindfs);
  assert.throws(() => fs.statSync(mnt!), /ENOTCONN/);
  const devnull = fs.openSync('/dev/null', 'w');
  const journal = await startJournal(t, store!, mnt!, devnull);
  fs.closeSync(devnull);
  fs.writeFileSync(path.join(mnt!, 'works'), 'yes');
  assert.match(journal.stderr(), /clearing the dead mount left at/);
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0);
});

test('a second journal on a live mountpoint is refused, and the first keeps working', { timeout: 30_000 }, async (t) => {
  const base = tempDir(t, 'busy');
  const [store, mnt, other] = dirs(base, 'store', 'mnt', 'other');
  const devnull = fs.openSync('/dev/null', 'w');
  const first = await startJournal(t, store!, mnt!, devnull);
  const second = spawnSync(process.execPath, [BIN.journal, other!, mnt!], { stdio: ['ignore', devnull, 'pipe'], encoding: 'utf8' });
  fs.closeSync(devnull);
  assert.equal(second.status, 1);
  assert.match(second.stderr, /already a mountpoint in use; unmount it first \[TFS_MOUNT_FAILED\]/);
  fs.writeFileSync(path.join(mnt!, 'still'), 'works');
  assert.equal(fs.readFileSync(path.join(store!, 'still'), 'utf8'), 'works');
  unmount(mnt!);
  assert.equal(await exitOf(first), 0);
});

test('SIGTERM unmounts, writes the end frame, exits 0; tfs-inspect shows every frame', { timeout: 30_000 }, async (t) => {
  const base = tempDir(t, 'term');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const file = path.join(base, 'stream');
  const out = fs.openSync(file, 'w');
  const journal = await startJournal(t, store!, mnt!, out);
  fs.closeSync(out);
  fs.writeFileSync(path.join(mnt!, 'a file'), 'x'.repeat(300_000));
  fs.mkdirSync(path.join(mnt!, 'd'));
  journal.child.kill('SIGTERM');
  assert.equal(await exitOf(journal), 0);
  assert.equal(isMounted(mnt!), false);
  const lines = execFileSync(process.execPath, [BIN.inspect], { input: fs.readFileSync(file), encoding: 'utf8' }).trim().split('\n');
  assert.match(lines[0]!, /^#0 STREAM_HEADER .*version=1/);
  assert.match(lines[1]!, /^#1 CREATE +path="a file" mode=file 0644 uid=0 gid=0 .*caller=pid:\d+/);
  assert.match(lines[2]!, /^#2 OPEN +handle=1 path="a file"/);
  assert.match(lines[3]!, /^#3 WRITE +handle=1 file="a file" offset=0 .*data=131072B/, 'writes arrive in 128 KiB requests');
  assert.ok(lines.some((l) => /MKDIR +path="d" mode=dir 0755/.test(l)));
  assert.match(lines.at(-1)!, /END +reason="unmounted"/);
  const json = execFileSync(process.execPath, [BIN.inspect, '--json'], { input: fs.readFileSync(file), encoding: 'utf8' }).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(json[3].op, 'WRITE');
  assert.equal(json[3].dataLength, 131072);
  assert.equal(json.length, lines.length);
});

test('tfs-mirror exits 3 naming the frame for a cut-off, corrupt or hostile stream; 2 on usage errors', { timeout: 30_000 }, (t) => {
  const base = tempDir(t, 'mirror-exit');
  const T = [1n, 2n] as const;
  const good = new StreamBuilder().add({ type: FrameType.MKDIR, path: 'd', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T }).end();
  const run = (name: string, input: Buffer, args: string[] = []) => spawnSync(process.execPath, [BIN.mirror, ...args, path.join(base, name)], { input, encoding: 'utf8' });
  const cut = run('cut', good.bytes().subarray(0, good.bytes().length - 16));
  assert.equal(cut.status, 3);
  assert.match(cut.stderr, /TFS_TRUNCATED/);
  const corrupt = Buffer.from(good.bytes());
  corrupt[good.list[0]!.length + 40] ^= 1;
  const bad = run('corrupt', corrupt);
  assert.equal(bad.status, 3);
  assert.match(bad.stderr, /frame #1: .*checksum/);
  const hostile = new StreamBuilder().add({ type: FrameType.SYMLINK, path: '/etc/evil', target: 'x', uid: 0, gid: 0, times: T, parentTimes: T }).end();
  const h = run('hostile', hostile.bytes());
  assert.equal(h.status, 3);
  assert.match(h.stderr, /frame #1: path "\/etc\/evil" is absolute \[TFS_HOSTILE_PATH\]/);
  assert.equal(run('usage', Buffer.alloc(0), ['--bogus']).status, 2);
  assert.equal(run('ok', good.bytes()).status, 0);
});
