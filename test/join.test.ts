import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, Proc, dirs, exitOf, start, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';
import { makeArchive } from './workloads';

const CHURN = path.join(__dirname, 'churn.js');
const seeds = (process.env['TFS_TEST_SEED'] ?? '2009,4242').split(',').map(Number);

/**
 * A store that already holds a tree: a source archive unpacked, files with several names, xattrs,
 * a sparse file, a file bigger than a snapshot step, and a tree made by an earlier churn run
 * (which the churn of the test then keeps changing: renames of its directories across the tree,
 * appends, truncations, hard links made and removed, renames over files, a file written through
 * a descriptor kept open while it is renamed).
 */
async function populate(t: Parameters<typeof start>[0], store: string, base: string, seed: number): Promise<void> {
  execFileSync('tar', ['-xf', makeArchive(base), '-C', store]);
  fs.mkdirSync(path.join(store, 'links'));
  fs.writeFileSync(path.join(store, 'links', 'one'), 'one file, three names');
  fs.linkSync(path.join(store, 'links', 'one'), path.join(store, 'links', 'two'));
  fs.linkSync(path.join(store, 'links', 'one'), path.join(store, 'three'));
  execFileSync('setfattr', ['-n', 'user.note', '-v', 'kept', path.join(store, 'links', 'one')]);
  const sparse = fs.openSync(path.join(store, 'sparse'), 'w');
  fs.writeSync(sparse, 'far away', 0, 'utf8');
  fs.writeSync(sparse, 'further', 40 * 1024 * 1024, 'utf8');
  fs.closeSync(sparse);
  fs.writeFileSync(path.join(store, 'big'), Buffer.alloc(5 * 1024 * 1024 + 17, 7));
  const stop = path.join(base, 'stop-populate');
  const churn = start(t, process.execPath, [CHURN, path.join(store, 'work'), String(seed), stop], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise((r) => setTimeout(r, 600));
  fs.writeFileSync(stop, '');
  assert.equal(await exitOf(churn), 0, churn.stderr());
}

for (const seed of seeds) {
  test(`first sync: tfs-journal STORE MNT | tfs-mirror REPLICA over a store that holds a tree, while programs write (seed ${seed})`, { timeout: 180_000 }, async (t) => {
    const base = tempDir(t, 'firstsync');
    const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
    await populate(t, store!, base, seed);
    const stop = path.join(base, 'stop');
    const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.mirror, '--preserve-privileges', replica!]);
    // The programs start at once: the snapshot is taken while they change the tree it walks.
    const churn = start(t, process.execPath, [CHURN, path.join(mnt!, 'work'), String(seed + 1), stop], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitFor(() => /snapshot 1 done/.test(journal.stderr()), 120_000, 'the snapshot');
    await new Promise((r) => setTimeout(r, 300));
    fs.writeFileSync(stop, '');
    assert.equal(await exitOf(churn), 0, churn.stderr());
    unmount(mnt!);
    assert.equal(await exitOf(journal), 0, journal.stderr());
    assert.equal(await exitOf(mirror), 0, mirror.stderr());
    assert.match(mirror.stderr(), /bootstrapping from snapshot 1/);
    assert.match(mirror.stderr(), /bootstrap done at frame #\d+/);
    assert.equal(treeDiff(store!, replica!), '', 'the replica equals the store');
  });

  test(`late replicas join a running tfs-journal | tfs-broadcast while programs write: from the stream's start, with --bootstrap, and with --bootstrap-with a copy (seed ${seed})`, { timeout: 300_000 }, async (t) => {
    const base = tempDir(t, 'join');
    const [store, mnt, r1, r2, r3] = dirs(base, 'store', 'mnt', 'r1', 'r2', 'r3');
    await populate(t, store!, base, seed);
    const sock = path.join(base, 'sock');
    const stop = path.join(base, 'stop');
    // The mission's own form, with no extra flag; one client is awaited, so that r1 sees the start.
    const { journal, reader: broadcast } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.broadcast, '--min-clients', '1', sock]);
    await waitFor(() => fs.existsSync(sock), 10_000, 'the broadcaster');
    const mirror = (replica: string, extra: string[]): Proc => start(t, process.execPath, [BIN.mirror, '--preserve-privileges', '--from', sock, ...extra, replica]);
    const fromStart = mirror(r1!, []);
    const churn = start(t, process.execPath, [CHURN, path.join(mnt!, 'work'), String(seed + 2), stop], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitFor(() => /snapshot 1 done/.test(journal.stderr()), 120_000, 'the first sync');
    // A stale replica (a file that is not in the store) joins with a snapshot of its own.
    fs.writeFileSync(path.join(r2!, 'stale'), 'not in the store');
    const snapshot = start(t, process.execPath, [BIN.mirror, '--preserve-privileges', '--from', sock, '--bootstrap', r2!], { env: { ...process.env, TFS_PROGRESS_MS: '50' } });
    await new Promise((r) => setTimeout(r, 300));
    // The copy by other means: cp -a keeps hard links, and fails on files that vanish under it,
    // which the repair brings back (so its status is ignored here). rsync -aHAX, the natural
    // choice, deadlocks now and then on a tree that changes under it (rsync 3.5.0, -H), even alone.
    const copied = mirror(r3!, ['--bootstrap-with', `cp -a '${store}/.' '${r3}/' 2>/dev/null; true`]);
    await waitFor(() => /bootstrap done/.test(snapshot.stderr()) && /bootstrap done/.test(copied.stderr()), 120_000, 'both late replicas').catch((err: Error) => {
      throw new Error(`${err.message}\n--bootstrap: ${snapshot.stderr()}\n--bootstrap-with: ${copied.stderr()}\nbroadcaster: ${broadcast.stderr()}\njournal: ${journal.stderr()}`);
    });
    await new Promise((r) => setTimeout(r, 300));
    fs.writeFileSync(stop, '');
    assert.equal(await exitOf(churn), 0, churn.stderr());
    unmount(mnt!);
    assert.equal(await exitOf(journal), 0, journal.stderr());
    assert.equal(await exitOf(broadcast), 0, broadcast.stderr());
    for (const [name, m] of [['from the start', fromStart], ['--bootstrap', snapshot], ['--bootstrap-with', copied]] as const) assert.equal(await exitOf(m), 0, `${name}: ${m.stderr()}`);
    assert.match(copied.stderr(), /copy done: asking for the repair of what changed meanwhile/);
    assert.match(snapshot.stderr(), /bootstrapping: \d+ entries, [\d.]+ MiB copied \([\d.]+ MiB\/s\), \d+ frames applied/, 'progress lines while bootstrapping');
    for (const r of [r1!, r2!, r3!]) assert.equal(treeDiff(store!, r), '', `replica ${path.basename(r)} equals the store`);
  });
}
