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
  assert.match(lines[0]!, /^#0 STREAM_HEADER .*version=2 .*origin="empty"/);
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

test('tfs-mirror and tfs-inspect refuse a terminal on stdin; usage errors say what is wrong in one line, then how to get help', { timeout: 30_000 }, (t) => {
  const base = tempDir(t, 'cli');
  const tty = (cmd: string) => spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8' });
  const mirror = tty(`${process.execPath} ${BIN.mirror} ${path.join(base, 'r')}`);
  assert.equal(mirror.status, 2);
  assert.match(mirror.stdout, /refusing to read frames from a terminal.*\[TFS_TTY_INPUT\]/);
  assert.equal(fs.existsSync(path.join(base, '.r.tfs-mirror.db')), false);
  const inspect = tty(`${process.execPath} ${BIN.inspect}`);
  assert.equal(inspect.status, 2);
  assert.match(inspect.stdout, /\[TFS_TTY_INPUT\]/);
  const usage = spawnSync(process.execPath, [BIN.mirror, '--bogus', 'x'], { encoding: 'utf8' });
  assert.equal(usage.status, 2);
  const lines = usage.stderr.trim().split('\n');
  assert.match(lines[0]!, /^tfs-mirror: Unknown option '--bogus'.* \[TFS_USAGE\]$/);
  assert.match(lines[1]!, /^Usage: tfs-mirror /);
  assert.equal(lines.length, 3, 'not the whole help text');
  const help = spawnSync(process.execPath, [BIN.journal, '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  for (const said of [/SIGHUP/, /Exit status/, /terminal/, /Transport\s+endpoint\s+is\s+not\s+connected/]) assert.match(help.stdout, said);
});

test('tfs-inspect exits 3 on empty or cut-off input, after printing every whole frame', { timeout: 30_000 }, () => {
  const T = [1n, 2n] as const;
  const s = new StreamBuilder().add({ type: FrameType.MKDIR, path: 'd', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T }).end();
  const run = (input: Buffer) => spawnSync(process.execPath, [BIN.inspect], { input, encoding: 'utf8' });
  const empty = run(Buffer.alloc(0));
  assert.equal(empty.status, 3);
  assert.match(empty.stderr, /empty input.*\[TFS_TRUNCATED\]/);
  const noEnd = run(Buffer.concat(s.list.slice(0, 2)));
  assert.equal(noEnd.status, 3);
  assert.match(noEnd.stdout, /#1 MKDIR/);
  assert.match(noEnd.stderr, /cut off after 2 frames, without an end frame \[TFS_TRUNCATED\]/);
  const whole = run(s.bytes());
  assert.equal(whole.status, 0, whole.stderr);
});

test('tfs-mirror: a symlink planted in the replica is hostile input (exit 3, TFS_HOSTILE_PATH, naming the frame); device nodes need --allow-devices', { timeout: 30_000 }, (t) => {
  const base = tempDir(t, 'mirror-hostile');
  const replica = path.join(base, 'replica');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(replica);
  fs.mkdirSync(outside);
  fs.symlinkSync(outside, path.join(replica, 'link'));
  const T = [1n, 2n] as const;
  const attack = new StreamBuilder().add({ type: FrameType.CREATE, path: 'link/planted', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T }).end();
  const r = spawnSync(process.execPath, [BIN.mirror, replica], { input: attack.bytes(), encoding: 'utf8' });
  assert.equal(r.status, 3);
  assert.match(r.stderr, /frame #1: CREATE "link\/planted": a symlink in the replica is on the way or at the end \(ELOOP\).*\[TFS_HOSTILE_PATH\]/);
  assert.deepEqual(fs.readdirSync(outside), []);
  const dev = new StreamBuilder().add({ type: FrameType.MKNOD, path: 'null', mode: 0o20666, rdev: (1 << 8) | 3, uid: 0, gid: 0, times: T, parentTimes: T }).end();
  const refused = spawnSync(process.execPath, [BIN.mirror, path.join(base, 'r2')], { input: dev.bytes(), encoding: 'utf8' });
  assert.equal(refused.status, 3);
  assert.match(refused.stderr, /character device \(1:3\); pass --allow-devices .*\[TFS_REFUSED\]/);
  const allowed = spawnSync(process.execPath, [BIN.mirror, '--allow-devices', path.join(base, 'r2')], { input: dev.bytes(), encoding: 'utf8' });
  assert.equal(allowed.status, 0, allowed.stderr);
  assert.ok(fs.lstatSync(path.join(base, 'r2', 'null')).isCharacterDevice());
});

test('tfs-mirror stopped by SIGINT records its cursor, says how to resume, and exits 130; a run that failed before any stream leaves no cursor file', { timeout: 30_000 }, async (t) => {
  const base = tempDir(t, 'sigint');
  const replica = path.join(base, 'replica');
  const garbage = spawnSync(process.execPath, [BIN.mirror, replica], { input: Buffer.alloc(64, 7), encoding: 'utf8' });
  assert.equal(garbage.status, 3);
  assert.equal(fs.existsSync(path.join(base, '.replica.tfs-mirror.db')), false, 'no cursor file for a stream never seen');
  const T = [1n, 2n] as const;
  const s = new StreamBuilder().add({ type: FrameType.MKDIR, path: 'd', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T });
  const mirror = start(t, process.execPath, [BIN.mirror, replica], { stdio: ['pipe', 'ignore', 'pipe'] });
  mirror.child.stdin!.write(s.bytes());
  await waitFor(() => fs.existsSync(path.join(replica, 'd')), 10_000, 'the first frame');
  mirror.child.kill('SIGINT');
  assert.equal(await exitOf(mirror), 130);
  assert.match(mirror.stderr(), /stopped by SIGINT after frame #1, cursor recorded; run the same command again to resume/);
  assert.doesNotMatch(mirror.stderr(), /Premature close/);
  const rest = spawnSync(process.execPath, [BIN.mirror, replica], { input: s.end().bytes(), encoding: 'utf8' });
  assert.equal(rest.status, 0, rest.stderr);
  assert.match(rest.stderr, /applied 1 frame, skipped 1 already applied/);
});
