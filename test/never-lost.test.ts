import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { FrameLog } from '../shared/framelog';
import { BIN, Proc, dirs, exitOf, rng, start, startJournal, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';

const CHURN = path.join(__dirname, 'churn.js');
const seed = Number(process.env['TFS_TEST_SEED'] ?? 2009);


/** The last frame a replica's cursor records as applied. */
function cursorOf(replica: string): bigint {
  const file = path.join(path.dirname(replica), `.${path.basename(replica)}.tfs-mirror.db`);
  if (!fs.existsSync(file)) return 0n;
  const db = new Database(file, { readonly: true });
  try {
    db.defaultSafeIntegers(true);
    return (db.prepare('SELECT seq FROM cursor').get() as { seq: bigint }).seq;
  } finally {
    db.close();
  }
}

/** A UNIX socket relay the test controls: cut() drops every connection through it. */
function relay(listenPath: string, target: string): { cut: () => number; close: () => void } {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((client) => {
    const upstream = net.createConnection(target);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  server.listen(listenPath);
  return {
    cut: () => {
      const n = pairs.size;
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
      return n;
    },
    close: () => server.close(),
  };
}

test(`nothing lost: mirrors killed, a broadcaster killed twice, connections cut and the journal remounted while programs write (seed ${seed})`, { timeout: 300_000 }, async (t) => {
  const base = tempDir(t, 'lost');
  const [store, mnt, r1, r2, r3] = dirs(base, 'store', 'mnt', 'r1', 'r2', 'r3');
  const spool = path.join(base, 'spool');
  const sock = path.join(base, 'sock');
  const relaySock = path.join(base, 'relay');
  const stop = path.join(base, 'stop');
  const pick = rng(seed);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  // The deployment of the README: the journal spools into D, the broadcaster serves D.
  const first = await startPipeline(t, store!, mnt!, process.execPath, [BIN.broadcast, '--log', spool, sock], ['--spool', spool]);
  await waitFor(() => fs.existsSync(sock), 10_000, 'the broadcaster');
  const mirror = (replica: string, from: string) => start(t, process.execPath, [BIN.mirror, '--quiet', '--preserve-privileges', '--reconnect-delay', '200', '--from', from, replica]);
  let m1 = mirror(r1!, sock);
  const m2 = mirror(r2!, sock);
  const cutter = relay(relaySock, sock);
  t.after(() => cutter.close());
  const m3 = mirror(r3!, relaySock);
  const churn = (n: number): Proc => start(t, process.execPath, [CHURN, path.join(mnt!, `churn${n}`), String(seed + n), stop], { stdio: ['ignore', 'pipe', 'pipe'] });

  let workers = [churn(1), churn(2)];
  let kills = 0;
  const killMirror = async () => {
    m1.child.kill('SIGKILL');
    await exitOf(m1);
    kills++;
    m1 = mirror(r1!, sock);
  };

  // Phase 1: the broadcaster dies (SIGKILL) twice; each time one comes back on the log alone.
  let broadcaster = first.reader;
  for (let round = 0; round < 2; round++) {
    await sleep(400 + pick(400));
    await killMirror();
    broadcaster.child.kill('SIGKILL');
    await exitOf(broadcaster);
    await sleep(100 + pick(300));
    assert.ok(cutter.cut() >= 0);
    broadcaster = start(t, process.execPath, [BIN.broadcast, '--log', spool, '--linger', '60s', sock]);
    await waitFor(() => /listening on/.test(broadcaster.stderr()), 10_000, 'the new broadcaster');
    await killMirror();
  }

  // Phase 2: the journal is unmounted and mounted again on the same spool; the stream goes on.
  fs.writeFileSync(stop, '');
  for (const w of workers) assert.equal(await exitOf(w), 0, `the programs on the mount saw no error: ${w.stderr()}`);
  fs.rmSync(stop);
  unmount(mnt!);
  assert.equal(await exitOf(first.journal), 0, `the first journal lost nothing: ${first.journal.stderr()}`);
  assert.match(first.journal.stderr(), /the frames go on into the spool .*nothing is lost/);
  const devnull = fs.openSync('/dev/null', 'w');
  const second = await startJournal(t, store!, mnt!, devnull, ['--spool', spool]);
  fs.closeSync(devnull);
  assert.match(second.stderr(), /going on with stream [0-9a-f]+ from the spool/);
  workers = [churn(3), churn(4)];
  for (let i = 0; i < 12; i++) {
    await sleep(150 + pick(250));
    if (i % 2 === 0) await killMirror();
    else cutter.cut();
  }
  fs.writeFileSync(stop, '');
  for (const w of workers) assert.equal(await exitOf(w), 0, `the programs on the mount saw no error: ${w.stderr()}`);
  unmount(mnt!);
  assert.equal(await exitOf(second), 0, second.stderr());
  assert.equal(kills, 10, 'the mirror was killed at ten moments');

  // Every replica reaches the end of the stream; then the broadcaster is told to stop.
  const end = FrameLog.openReader(spool).lastSeq;
  await waitFor(() => [r1!, r2!, r3!].every((r) => cursorOf(r) === end), 60_000, `every replica at #${end}`);
  broadcaster.child.kill('SIGTERM');
  await exitOf(broadcaster);
  for (const [name, m] of [['m1', m1], ['m2', m2], ['m3', m3]] as const) assert.equal(await exitOf(m), 0, `${name}: ${m.stderr()}`);
  for (const r of [r1!, r2!, r3!]) assert.equal(treeDiff(store!, r), '', `replica ${r} equals the store`);
  t.diagnostic(`stream of ${end} frames; mirror kills ${kills}; broadcaster kills 2; journal remounted once`);
});
