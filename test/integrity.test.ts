import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, dirs, exitOf, startPipeline, tempDir, treeDiff, unmount } from './harness';

const MMAP_WRITE = `
import mmap, os, sys
path, off, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, os.fstat(fd).st_size)
m[off:off + len(data)] = data
m.flush(); m.close(); os.close(fd)`;

/** A small seeded generator (mulberry32), so that a failing run can be replayed with TFS_TEST_SEED. */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

test('random writes, appends, truncates and mmap writes through the mount match an in-memory model, and so does the replica', { timeout: 240_000 }, async (t) => {
  const seed = Number(process.env['TFS_TEST_SEED'] ?? 2009);
  t.diagnostic(`seed ${seed} (TFS_TEST_SEED=${seed} replays this run)`);
  const rnd = prng(seed);
  const base = tempDir(t, 'integrity');
  const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
  const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.mirror, '--quiet', replica!]);

  const files = ['f0', 'f1', 'sub/f2'].map((n) => path.join(mnt!, n));
  fs.mkdirSync(path.join(mnt!, 'sub'));
  const model = files.map(() => Buffer.alloc(0));
  const fds = files.map((f) => fs.openSync(f, 'w+'));
  const appendFds = files.map((f) => fs.openSync(f, 'a'));
  const bytes = (n: number) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = rnd(256);
    return b;
  };
  const resize = (i: number, size: number) => {
    const m = Buffer.alloc(size);
    model[i]!.copy(m, 0, 0, Math.min(size, model[i]!.length));
    model[i] = m;
  };
  const counts: Record<string, number> = {};
  for (let step = 0; step < 400; step++) {
    const i = rnd(files.length);
    const size = model[i]!.length;
    const kind = ['write', 'write', 'append', 'ftruncate', 'truncate', 'mmap', 'read'][rnd(7)]!;
    counts[kind] = (counts[kind] ?? 0) + 1;
    if (kind === 'write') {
      const offset = rnd(size + 65536);
      const data = bytes(1 + rnd(rnd(2) ? 4096 : 300_000));
      fs.writeSync(fds[i]!, data, 0, data.length, offset);
      if (offset + data.length > size) resize(i, offset + data.length);
      data.copy(model[i]!, offset);
    } else if (kind === 'append') {
      const data = bytes(1 + rnd(20_000));
      fs.writeSync(appendFds[i]!, data);
      model[i] = Buffer.concat([model[i]!, data]);
    } else if (kind === 'ftruncate') {
      const to = rnd(size + 100_000);
      fs.ftruncateSync(fds[i]!, to);
      resize(i, to);
    } else if (kind === 'truncate') {
      const to = rnd(size + 1);
      fs.truncateSync(files[i]!, to);
      resize(i, to);
    } else if (kind === 'mmap' && size > 0) {
      const offset = rnd(size);
      const data = bytes(1 + rnd(Math.min(size - offset, 65536)));
      execFileSync('python3', ['-c', MMAP_WRITE, files[i]!, String(offset), data.toString('hex')]);
      data.copy(model[i]!, offset);
    } else if (kind === 'read' && size > 0) {
      const offset = rnd(size);
      const length = 1 + rnd(size - offset);
      const got = Buffer.alloc(length);
      assert.equal(fs.readSync(fds[i]!, got, 0, length, offset), length);
      assert.ok(got.equals(model[i]!.subarray(offset, offset + length)), `step ${step}: read of ${files[i]} at ${offset}+${length} differs from the model`);
    }
    assert.equal(fs.fstatSync(fds[i]!).size, model[i]!.length, `step ${step} (${kind}): size of ${files[i]}`);
  }
  t.diagnostic(JSON.stringify(counts));
  for (const fd of [...fds, ...appendFds]) fs.closeSync(fd);
  files.forEach((f, i) => assert.ok(fs.readFileSync(f).equals(model[i]!), `${f} equals the model`));
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  files.forEach((f, i) => assert.ok(fs.readFileSync(path.join(replica!, path.relative(mnt!, f))).equals(model[i]!), `replica of ${f} equals the model`));
  assert.equal(treeDiff(store!, replica!), '');
});
