import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, dirs, exitOf, start, startJournal, tempDir, treeDiff, unmount } from './harness';
import { edgeCases, gitWork, makeArchive, tarExtract } from './workloads';

test('a mirror killed with SIGKILL at random moments, run again on the same stream, ends equal to the store', { timeout: 300_000 }, async (t) => {
  const base = tempDir(t, 'resume');
  const [store, mnt, reference, victim] = dirs(base, 'store', 'mnt', 'reference', 'victim');
  const streamFile = path.join(base, 'stream.tfs');
  const archive = makeArchive(base);
  const out = fs.openSync(streamFile, 'w');
  const journal = await startJournal(t, store!, mnt!, out);
  fs.closeSync(out);
  edgeCases(mnt!);
  tarExtract(mnt!, archive);
  gitWork(mnt!);
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0);

  const runMirror = (replica: string) => {
    const input = fs.openSync(streamFile, 'r');
    const proc = start(t, process.execPath, [BIN.mirror, '--quiet', '--preserve-privileges', replica], { stdio: [input, 'ignore', 'pipe'] });
    fs.closeSync(input);
    return proc;
  };
  const began = Date.now();
  assert.equal(await exitOf(runMirror(reference!)), 0);
  const cleanRunMs = Date.now() - began;
  assert.equal(treeDiff(store!, reference!), '');

  // Kill at random points spread over a clean run's duration (seeded, so a failure can be replayed).
  let seed = Number(process.env['TFS_TEST_SEED'] ?? 12345);
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  let kills = 0;
  for (let round = 0; round < 40; round++) {
    const proc = runMirror(victim!);
    if (round < 12) {
      const delay = 100 + random() * cleanRunMs * 0.25;
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), delay);
      const result = await exitOf(proc);
      clearTimeout(timer);
      if (result === 'SIGKILL') {
        kills++;
        continue;
      }
      assert.equal(result, 0, proc.stderr());
      break;
    }
    assert.equal(await exitOf(proc), 0, proc.stderr());
    break;
  }
  t.diagnostic(`clean run ${cleanRunMs} ms; killed ${kills} times before the run that finished`);
  assert.ok(kills >= 3, `the mirror was killed mid-stream ${kills} times`);
  assert.equal(treeDiff(store!, victim!), '', 'the resumed replica equals the store');
});
