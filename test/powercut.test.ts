import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { BIN, Proc, dirs, exitOf, start, startJournal, tempDir, treeDiff, unmount, waitFor } from './harness';

const CHURN = path.join(__dirname, 'churn.js');
const CRASHFS = path.join(__dirname, 'crashfs.js');
const seed = Number(process.env['TFS_TEST_SEED'] ?? 2009);
const ROUNDS = Number(process.env['TFS_POWERCUT_ROUNDS'] ?? 6);

/** Mounts crashfs (a filesystem that can lose power, see crashfs.ts) of `backing` at `mnt`. */
async function crashfs(t: TestContext, backing: string, mnt: string): Promise<Proc> {
  const proc = start(t, process.execPath, [CRASHFS, backing, mnt]);
  await waitFor(() => /crashfs: mounted/.test(proc.stderr()) || proc.child.exitCode !== null, 10_000, 'crashfs');
  return proc;
}

test(`power cuts under a replica: with --durable it resumes to the store exactly; without, it refuses rather than exit 0 with a wrong replica (seed ${seed})`, { timeout: 600_000 }, async (t) => {
  const base = tempDir(t, 'powercut');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const stop = path.join(base, 'stop');
  // A stream of a busy tree: creates, appends, overwrites, renames over files, fsyncs, links.
  const streamFile = path.join(base, 'stream');
  const out = fs.openSync(streamFile, 'w');
  const journal = await startJournal(t, store!, mnt!, out);
  fs.closeSync(out);
  const churn = start(t, process.execPath, [CHURN, mnt!, String(seed), stop], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise((r) => setTimeout(r, 1000));
  fs.writeFileSync(stop, '');
  assert.equal(await exitOf(churn), 0, churn.stderr());
  fs.rmSync(stop);
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0);
  const stream = fs.readFileSync(streamFile);

  let x = seed >>> 0 || 1;
  const pick = (n: number) => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) % n);
  const outcomes: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const durable = round % 2 === 1;
    const [backing, cmnt] = dirs(path.join(base, `round${round}`), 'backing', 'mnt');
    const replica = path.join(cmnt!, 'replica');
    // The cursor lies off the crashing disk: it survives the cut whole, the worst case for a
    // cursor that counted writes the disk never got (and SQLite's shared memory needs no FUSE).
    const argsFor = (state: string, r: string) => [BIN.mirror, '--quiet', '--preserve-privileges', '--state', state, ...(durable ? ['--durable'] : []), r];
    const args = argsFor(path.join(base, `round${round}`, 'cursor.db'), replica);
    let disk = await crashfs(t, backing!, cmnt!);
    const began = Date.now();
    const reference = spawnSync(process.execPath, argsFor(path.join(base, `round${round}`, 'reference.db'), path.join(cmnt!, 'reference')), { input: stream, encoding: 'utf8' });
    assert.equal(reference.status, 0, reference.stderr);
    const took = Date.now() - began;
    fs.rmSync(path.join(cmnt!, 'reference'), { recursive: true });
    const mirror = start(t, process.execPath, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    mirror.child.stdin!.on('error', () => {}); // it is killed while reading
    mirror.child.stdin!.end(stream);
    // Cut while changes are at risk: the mirror is frozen at a random moment, and kept frozen for
    // the cut only if crashfs holds changes not yet synced (else it runs on a little).
    await new Promise((r) => setTimeout(r, Math.floor(took * (0.1 + pick(60) / 100))));
    for (let tries = 0; ; tries++) {
      mirror.child.kill('SIGSTOP');
      fs.rmSync(`${backing}.pending`, { force: true });
      disk.child.kill('SIGUSR1');
      await waitFor(() => fs.existsSync(`${backing}.pending`) && fs.readFileSync(`${backing}.pending`, 'utf8').endsWith('\n'), 5000, 'crashfs to count');
      if (Number(fs.readFileSync(`${backing}.pending`, 'utf8')) > 0 || tries === 50 || mirror.child.exitCode !== null) break;
      mirror.child.kill('SIGCONT');
      await new Promise((r) => setTimeout(r, 1 + pick(10)));
    }
    mirror.child.kill('SIGKILL');
    await exitOf(mirror);
    disk.child.kill('SIGUSR2');
    await exitOf(disk);
    assert.match(disk.stderr(), /power cut: \d+ changes undone/);
    const undone = /power cut: (\d+) changes undone/.exec(disk.stderr())![1];
    // The power is back (a new boot): the disk as it was at the last sync.
    disk = await crashfs(t, backing!, cmnt!);
    const again = spawnSync(process.execPath, args, { input: stream, encoding: 'utf8', env: { ...process.env, TFS_BOOT_ID: `after-cut-${round}` } });
    if (durable) {
      assert.equal(again.status, 0, `round ${round} (--durable): ${again.stderr}`);
      assert.equal(treeDiff(store!, replica), '', `round ${round} (--durable): the replica equals the store`);
      outcomes.push(`${round} durable: ${undone} undone, resumed, equal`);
    } else if (again.status === 0) {
      // Only right if nothing was at risk at the cut: then the replica must be exact.
      assert.equal(treeDiff(store!, replica), '', `round ${round}: exited 0, so the replica must equal the store`);
      outcomes.push(`${round}: ${undone} undone, resumed, equal`);
    } else {
      assert.equal(again.status, 1, again.stderr);
      assert.match(again.stderr, /did not stop cleanly .* the machine or the replica's mount changed since .*\[TFS_UNCLEAN_STOP\]/);
      assert.match(again.stderr, /--durable/);
      outcomes.push(`${round}: ${undone} undone, refused (TFS_UNCLEAN_STOP)`);
    }
    disk.child.kill('SIGTERM');
    await exitOf(disk);
  }
  t.diagnostic(outcomes.join('; '));
});
