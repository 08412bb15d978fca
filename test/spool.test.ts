import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { FrameDecoder } from '../shared/decoder';
import { FrameType } from '../shared/frame';
import { FrameLog } from '../shared/framelog';
import { BIN, dirs, exitOf, smallDisk, start, startJournal, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';
import { edgeCases, makeArchive, tarExtract } from './workloads';

test('with --spool, a reader that goes away loses nothing: the journal exits 0, and a broadcaster on the spool brings a new replica to the store', { timeout: 120_000 }, async (t) => {
  const base = tempDir(t, 'spool');
  const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
  const spool = path.join(base, 'spool');
  const sock = path.join(base, 'sock');
  const archive = makeArchive(base);
  const { journal, reader } = await startPipeline(t, store!, mnt!, 'head', ['-c', '4096'], ['--spool', spool]);
  fs.writeFileSync(path.join(mnt!, 'first'), Buffer.alloc(100_000, 1));
  assert.equal(await exitOf(reader), 0);
  edgeCases(mnt!);
  tarExtract(mnt!, archive);
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.match(journal.stderr(), /journal reader gone \(EPIPE\) before frame #\d+: the frames go on into the spool .*nothing is lost; serve them with: tfs-broadcast --log/);
  assert.match(journal.stderr(), /unmounted; every change was delivered/);
  // The mirror waits for the broadcaster, which serves the spool alone (stdin is not a stream).
  const mirror = start(t, process.execPath, [BIN.mirror, '--quiet', '--preserve-privileges', '--reconnect-delay', '200', '--from', sock, replica!]);
  const broadcast = start(t, process.execPath, [BIN.broadcast, '--log', spool, '--linger', '3s', sock]);
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  assert.equal(await exitOf(broadcast), 0, broadcast.stderr());
  assert.equal(treeDiff(store!, replica!), '');
});

test('a journal refuses to go on with its spooled stream when STORE changed while it was not mounted', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'changed');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const spool = path.join(base, 'spool');
  const devnull = fs.openSync('/dev/null', 'w');
  t.after(() => fs.closeSync(devnull));
  fs.mkdirSync(path.join(store!, 'deep', 'er'), { recursive: true });
  fs.writeFileSync(path.join(store!, 'deep', 'er', 'f'), 'one');
  const first = await startJournal(t, store!, mnt!, devnull, ['--spool', spool]);
  fs.appendFileSync(path.join(mnt!, 'deep', 'er', 'f'), ' two');
  unmount(mnt!);
  assert.equal(await exitOf(first), 0);
  // Nothing changed: it goes on.
  const again = await startJournal(t, store!, mnt!, devnull, ['--spool', spool]);
  assert.match(again.stderr(), /going on with stream/);
  unmount(mnt!);
  assert.equal(await exitOf(again), 0);
  // A change made on STORE directly, deep in the tree: no frame carries it.
  await new Promise((r) => setTimeout(r, 20));
  fs.appendFileSync(path.join(store!, 'deep', 'er', 'f'), ' three');
  const refused = spawnSync(process.execPath, [BIN.journal, '--spool', spool, store!, mnt!], { stdio: ['ignore', devnull, 'pipe'], encoding: 'utf8', timeout: 30_000 });
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /STORE changed after the last frame of the stream spooled in .* \("deep\/er\/f", and maybe more\).*\[TFS_STORE_CHANGED\]/);
  assert.match(refused.stderr, /Start a new stream/);
  assert.equal(fs.readdirSync(mnt!).length, 0, 'nothing was mounted');
});

test('the spool keeps to --spool-max: frames no reader took are dropped loudly, and the exit says they are lost', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'spoolmax');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const spool = path.join(base, 'spool');
  const { journal, reader } = await startPipeline(t, store!, mnt!, 'head', ['-c', '1'], ['--spool', spool, '--spool-max', '1M']);
  fs.writeFileSync(path.join(mnt!, 'a'), 'x');
  assert.equal(await exitOf(reader), 0);
  // 8 MiB in 128 KiB writes: 64 frames a MiB, a segment check every 256 appends.
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(mnt!, `big${i}`), Buffer.alloc(1 << 20, i));
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(mnt!, `small${i}`), 's');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 1);
  assert.match(journal.stderr(), /SPOOL FULL \(1048576 bytes\): dropped frames #1 to #\d+, of which #\d+ on had reached no reader/);
  assert.match(journal.stderr(), /changes made on the store were not delivered: frames from #\d+ on never reached the reader nor stayed in the spool \[TFS_NOT_DELIVERED\]/);
  const log = FrameLog.openReader(spool);
  assert.ok(log.bytes < 80 * 1024 * 1024);
  assert.ok(log.firstSeq > 1n);
});

test('a full disk under the spool is said loudly and never corrupts it; the filesystem keeps working', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'spoolfull');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const spool = path.join(base, 'small', 'spool');
  smallDisk(path.join(base, 'small'), '3m');
  const { journal, reader } = await startPipeline(t, store!, mnt!, 'head', ['-c', '1'], ['--spool', spool, '--spool-max', '100M']);
  fs.writeFileSync(path.join(mnt!, 'a'), 'x');
  assert.equal(await exitOf(reader), 0);
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(mnt!, `big${i}`), Buffer.alloc(1 << 20, i));
  assert.equal(fs.readFileSync(path.join(store!, 'big7')).length, 1 << 20, 'the filesystem kept working');
  await waitFor(() => /SPOOL BROKEN: .*ENOSPC/.test(journal.stderr()), 5000, 'the broken spool to be reported');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 1);
  const match = /Frames from #(\d+) on are NOT spooled/.exec(journal.stderr());
  assert.ok(match, journal.stderr());
  // What the spool holds is whole: every frame up to the one before the failure, checksums right.
  const log = FrameLog.openReader(spool);
  assert.equal(log.lastSeq, BigInt(match[1]!) - 1n);
  const cursor = log.cursor(log.firstSeq);
  let n = 0n;
  for (let frames = cursor.read(); frames.length > 0; frames = cursor.read()) n += BigInt(frames.length);
  assert.equal(n, log.lastSeq - log.firstSeq + 1n);
});

test('a full disk under the spool while writes go native: the frame that did not fit is appended again by JavaScript, the spool stays whole, the reader gets everything', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'spoolfull-native');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const spool = path.join(base, 'small', 'spool');
  const taken = path.join(base, 'taken');
  smallDisk(path.join(base, 'small'), '2m');
  const { journal, reader } = await startPipeline(t, store!, mnt!, 'sh', ['-c', `cat > '${taken}'`], ['--spool', spool, '--spool-max', '100M']);
  for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(mnt!, `big${i}`), Buffer.alloc(1 << 20, i));
  await waitFor(() => /SPOOL BROKEN: .*ENOSPC/.test(journal.stderr()), 5000, 'the broken spool to be reported');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, `the reader took every frame: ${journal.stderr()}`);
  assert.equal(await exitOf(reader), 0);
  const brokenAt = BigInt(/Frames from #(\d+) on are NOT spooled/.exec(journal.stderr())![1]!);
  const stream = [...new FrameDecoder().push(fs.readFileSync(taken))];
  const failed = stream.find((f) => f.seq === brokenAt)!;
  assert.equal(failed.type, FrameType.WRITE);
  assert.equal(failed.meta[0], 0x83, 'the frame that broke the spool was made natively (its native append failed first)');
  const log = FrameLog.openReader(spool);
  assert.equal(log.lastSeq, brokenAt - 1n, 'the spool ends right before it');
  const cursor = log.cursor(log.firstSeq);
  let n = 0n;
  for (let frames = cursor.read(); frames.length > 0; frames = cursor.read()) n += BigInt(frames.length);
  assert.equal(n, log.lastSeq - log.firstSeq + 1n, 'whole, every checksum right');
  assert.ok(stream.some((f) => f.type === FrameType.WRITE && f.meta[0] === 0x83 && f.seq < brokenAt), 'native frames were spooled before');
});

test('a full disk under the broadcaster\'s log stops it with an error naming the frame; the log stays whole', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'logfull');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const logDir = path.join(base, 'small', 'log');
  smallDisk(path.join(base, 'small'), '2m');
  const sock = path.join(base, 'sock');
  const { journal, reader: broadcast } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.broadcast, '--log', logDir, sock]);
  for (let i = 0; i < 6; i++) {
    try {
      fs.writeFileSync(path.join(mnt!, `big${i}`), Buffer.alloc(1 << 20, i));
    } catch {
      break; // unreachable: the journal keeps working, see below
    }
  }
  assert.equal(await exitOf(broadcast), 1);
  assert.match(broadcast.stderr(), /frame log .*: cannot append frame #(\d+): ENOSPC.*\[TFS_STATE\]/);
  fs.writeFileSync(path.join(mnt!, 'after'), 'still works');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 1, 'the journal lost what its reader never took');
  const log = FrameLog.openReader(logDir);
  const cursor = log.cursor(1n);
  let n = 0n;
  for (let frames = cursor.read(); frames.length > 0; frames = cursor.read()) n += BigInt(frames.length);
  assert.equal(n, log.lastSeq);
});

test('a full disk under a replica stops the mirror naming the frame and the file; with room again, the same command completes it exactly', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'replicafull');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const disk = path.join(base, 'disk');
  smallDisk(disk, '4m');
  const replica = path.join(disk, 'replica');
  const state = path.join(base, 'cursor.db');
  const streamFile = path.join(base, 'stream');
  const out = fs.openSync(streamFile, 'w');
  const journal = await startJournal(t, store!, mnt!, out);
  fs.closeSync(out);
  for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(mnt!, `f${i}`), Buffer.alloc(700_000, i + 1));
  fs.mkdirSync(path.join(mnt!, 'after'));
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0);
  const run = () => spawnSync(process.execPath, [BIN.mirror, '--state', state, replica], { input: fs.readFileSync(streamFile), encoding: 'utf8' });
  const full = run();
  assert.equal(full.status, 1, full.stderr);
  const m = /frame #(\d+): WRITE handle \d+ \("(f\d+)"\): ENOSPC.*\[TFS_APPLY_FAILED\]/.exec(full.stderr);
  assert.ok(m, full.stderr);
  const db = new Database(state, { readonly: true });
  db.defaultSafeIntegers(true);
  const seq = (db.prepare('SELECT seq FROM cursor').get() as { seq: bigint }).seq;
  db.close();
  assert.ok(seq < BigInt(m[1]!), `the cursor (#${seq}) stays before the frame that failed (#${m[1]})`);
  execFileSync('mount', ['-o', 'remount,size=64m', disk]);
  const again = run();
  assert.equal(again.status, 0, again.stderr);
  assert.equal(treeDiff(store!, replica), '');
});
