import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FrameDecoder } from '../shared/decoder';
import { BIN, dirs, exitOf, start, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';
import { edgeCases, gitWork, makeArchive, sqliteWork, tarExtract } from './workloads';

test('tfs-journal | tfs-mirror: tar, git, sqlite3 and edge cases on a real mount; the replica equals the store', { timeout: 240_000 }, async (t) => {
  const base = tempDir(t, 'pipe');
  const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
  const archive = makeArchive(base);
  const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.mirror, '--quiet', '--preserve-privileges', replica!]);

  edgeCases(mnt!);
  tarExtract(mnt!, archive);
  gitWork(mnt!);
  sqliteWork(mnt!);
  assert.equal(treeDiff(store!, mnt!), '', 'the mount shows exactly the store');

  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  assert.equal(treeDiff(store!, replica!), '', 'the replica equals the store');
  assert.ok(!fs.readdirSync(path.join(replica!)).some((n) => n.startsWith('.fuse_hidden')));
});

test('one journal fanned out to three mirrors through tfs-broadcast --min-clients 3', { timeout: 180_000 }, async (t) => {
  const base = tempDir(t, 'fan');
  const [store, mnt, r1, r2, r3] = dirs(base, 'store', 'mnt', 'r1', 'r2', 'r3');
  const socket = path.join(base, 'sock');
  const archive = makeArchive(base);
  const { journal, reader: broadcast } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.broadcast, '--min-clients', '3', socket]);
  await new Promise((r) => setTimeout(r, 300));
  const mirrors = [r1!, r2!, r3!].map((r) => start(t, process.execPath, [BIN.mirror, '--quiet', '--preserve-privileges', '--from', socket, r]));

  edgeCases(mnt!);
  tarExtract(mnt!, archive);
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(broadcast), 0, broadcast.stderr());
  for (const [i, m] of mirrors.entries()) assert.equal(await exitOf(m), 0, `mirror ${i + 1}: ${m.stderr()}`);
  for (const r of [r1!, r2!, r3!]) assert.equal(treeDiff(store!, r), '', `replica ${r}`);
});

test('a journal whose reader dies keeps serving: every operation succeeds; it exits 1 naming the first frame the reader never took', { timeout: 120_000 }, async (t) => {
  const base = tempDir(t, 'epipe');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const archive = makeArchive(base);
  const taken = path.join(base, 'taken');
  const { journal, reader } = await startPipeline(t, store!, mnt!, 'sh', ['-c', `head -c 4096 > '${taken}'`]);
  fs.writeFileSync(path.join(mnt!, 'first'), Buffer.alloc(100_000, 1));
  assert.equal(await exitOf(reader), 0);
  edgeCases(mnt!);
  tarExtract(mnt!, archive);
  assert.equal(treeDiff(store!, mnt!), '');
  await waitFor(() => /JOURNAL READER GONE \(EPIPE\)/.test(journal.stderr()), 5000, 'the loss to be reported');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 1, journal.stderr());
  // The reader took whole frames #0..#n-1 and part of #n: #n is the first frame it never got.
  const decoder = new FrameDecoder();
  const whole = [...decoder.push(fs.readFileSync(taken))];
  assert.ok(!decoder.idle, 'head stopped inside a frame');
  const first = whole.length;
  assert.match(journal.stderr(), new RegExp(`JOURNAL READER GONE \\(EPIPE\\): frames from #${first} on are NOT delivered`));
  assert.match(journal.stderr(), new RegExp(`unmounted; \\d+ changes made on the store were not delivered: frames from #${first} on never reached the reader \\[TFS_NOT_DELIVERED\\]`));
});
