import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { FrameType } from '../shared/frame';
import { Times } from '../shared/ops';
import { TfsError } from '../shared/errors';
import { StreamBuilder } from '../shared/stream-builder';
import { Mirror, defaultStatePath } from './mirror';

let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-mirror-'))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const T: Times = [1_700_000_000_000_000_001n, 1_700_000_000_000_000_002n];

function sampleStream(id = 'stream-a'): StreamBuilder {
  return new StreamBuilder(id)
    .add({ type: FrameType.MKDIR, path: 'd', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.CREATE, path: 'd/f', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.OPEN, handle: 1, path: 'd/f' })
    .add({ type: FrameType.WRITE, handle: 1, offset: 0 }, Buffer.from('hello '))
    .add({ type: FrameType.WRITE, handle: 1, offset: 6 }, Buffer.from('world'))
    .add({ type: FrameType.RENAME, from: 'd/f', path: 'd/g', flags: 0, times: T, fromParentTimes: T, parentTimes: T })
    .add({ type: FrameType.WRITE, handle: 1, offset: 11 }, Buffer.from('!'))
    .add({ type: FrameType.RELEASE, handle: 1, times: T })
    .end();
}

async function* chunks(...parts: Buffer[]) {
  for (const p of parts) yield p;
}

function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(root, r), { bigint: true });
      out[r] = `${st.mode} ${st.mtimeNs} ${st.isFile() ? fs.readFileSync(path.join(root, r), 'hex') : ''}`;
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

test('a stream applied, then applied again: everything is skipped the second time', async () => {
  const replica = path.join(dir, 'r');
  const bytes = sampleStream().bytes();
  const first = await new Mirror({ replica }).run(chunks(bytes));
  assert.equal(first.applied, 9);
  assert.equal(fs.readFileSync(path.join(replica, 'd/g'), 'utf8'), 'hello world!');
  const second = await new Mirror({ replica }).run(chunks(bytes));
  assert.deepEqual([second.applied, second.skipped], [0, 9]);
  assert.ok(fs.existsSync(defaultStatePath(replica)));
  assert.equal(fs.readdirSync(replica).length, 1, 'the cursor is not inside the replica');
});

test('property: a stream cut off anywhere, then run again whole, gives the same replica as one clean run', async () => {
  const stream = sampleStream();
  const bytes = stream.bytes();
  const reference = path.join(dir, 'reference');
  await new Mirror({ replica: reference }).run(chunks(bytes));
  const want = snapshot(reference);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: bytes.length - 1 }), async (cut) => {
      const replica = path.join(dir, `r${n++}`);
      await assert.rejects(new Mirror({ replica }).run(chunks(bytes.subarray(0, cut))), (e: unknown) => e instanceof TfsError && e.code === 'TFS_TRUNCATED');
      await new Mirror({ replica }).run(chunks(bytes));
      assert.deepEqual(snapshot(replica), want);
    }),
    { numRuns: 40 },
  );
});

test('killed after a rename reached the replica but before its commit: the rerun moves the open handles too', async () => {
  const replica = path.join(dir, 'r');
  const frames = sampleStream().list;
  // Header and frames up to the second WRITE are committed; the RENAME then reached the disk, and the kill came.
  await assert.rejects(new Mirror({ replica }).run(chunks(Buffer.concat(frames.slice(0, 6)))), (e: unknown) => e instanceof TfsError && e.code === 'TFS_TRUNCATED');
  fs.renameSync(path.join(replica, 'd/f'), path.join(replica, 'd/g'));
  await new Mirror({ replica }).run(chunks(Buffer.concat(frames)));
  assert.equal(fs.readFileSync(path.join(replica, 'd/g'), 'utf8'), 'hello world!');
  assert.deepEqual(fs.readdirSync(path.join(replica, 'd')), ['g']);
});

test('a file open through a name that goes while it has another: a restarted mirror still writes to it', async () => {
  const replica = path.join(dir, 'r');
  const frames = new StreamBuilder('stream-links')
    .add({ type: FrameType.CREATE, path: 'a', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.LINK, path: 'b', from: 'a', parentTimes: T })
    .add({ type: FrameType.OPEN, handle: 1, path: 'a' })
    .add({ type: FrameType.WRITE, handle: 1, offset: 0 }, Buffer.from('x'))
    .add({ type: FrameType.UNLINK, path: 'a', parentTimes: T })
    .add({ type: FrameType.WRITE, handle: 1, offset: 1 }, Buffer.from('y'))
    .add({ type: FrameType.RELEASE, handle: 1, times: T })
    .end().list;
  // Stopped right after the UNLINK: the descriptor is gone, the name it was opened by too.
  await assert.rejects(new Mirror({ replica }).run(chunks(Buffer.concat(frames.slice(0, 6)))), (e: unknown) => e instanceof TfsError && e.code === 'TFS_TRUNCATED');
  await new Mirror({ replica }).run(chunks(Buffer.concat(frames)));
  assert.equal(fs.readFileSync(path.join(replica, 'b'), 'utf8'), 'xy');
});

test('a stream from another journal is refused unless told to start over', async () => {
  const replica = path.join(dir, 'r');
  await new Mirror({ replica }).run(chunks(sampleStream('one').bytes()));
  await assert.rejects(new Mirror({ replica }).run(chunks(sampleStream('two').bytes())), (e: unknown) => e instanceof TfsError && e.code === 'TFS_STREAM_MISMATCH' && /--restart/.test(e.message));
  const again = await new Mirror({ replica, restart: true }).run(chunks(sampleStream('two').bytes()));
  assert.equal(again.streamId, 'two');
  assert.equal(again.applied, 9);
});

test('a gap in sequence numbers is refused, naming the frame', async () => {
  const replica = path.join(dir, 'r');
  const s = sampleStream();
  await assert.rejects(new Mirror({ replica }).run(chunks(Buffer.concat(s.list.slice(0, 3)))), /cut off after frame #2/);
  await assert.rejects(new Mirror({ replica }).run(chunks(Buffer.concat([s.list[0]!, ...s.list.slice(5)]))), (e: unknown) => e instanceof TfsError && e.code === 'TFS_SEQUENCE_GAP' && /frame #5/.test(e.message));
});

test('a stream that does not begin with a header, or is not TFS, is refused', async () => {
  const s = sampleStream();
  await assert.rejects(new Mirror({ replica: path.join(dir, 'a') }).run(chunks(Buffer.concat(s.list.slice(1)))), /does not begin with a stream header/);
  await assert.rejects(new Mirror({ replica: path.join(dir, 'b') }).run(chunks(Buffer.from('hello, this is not a stream at all!!'))), (e: unknown) => e instanceof TfsError);
});

test('a hostile frame is refused and nothing of it is applied', async () => {
  const replica = path.join(dir, 'r');
  const s = new StreamBuilder().add({ type: FrameType.CREATE, path: '../escape', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T }).end();
  await assert.rejects(new Mirror({ replica }).run(chunks(s.bytes())), (e: unknown) => e instanceof TfsError && e.code === 'TFS_HOSTILE_PATH' && /frame #1/.test(e.message));
  assert.equal(fs.existsSync(path.join(dir, 'escape')), false);
});

test('the cursor file may not be placed inside the replica', () => {
  assert.throws(() => new Mirror({ replica: path.join(dir, 'r'), state: path.join(dir, 'r', 'state.db') }), /must not lie inside/);
});

test('a new replica given a stream from its middle is refused, and told to bootstrap', async () => {
  const replica = path.join(dir, 'r');
  const s = new StreamBuilder('live')
    .add({ type: FrameType.MKDIR, path: 'a', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.MKDIR, path: 'b', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T })
    .end();
  await assert.rejects(new Mirror({ replica }).run(chunks(Buffer.concat([s.list[0]!, ...s.list.slice(2)]))), (e: unknown) => e instanceof TfsError && e.code === 'TFS_HISTORY_GONE' && /--bootstrap/.test(e.hint ?? ''));
  assert.deepEqual(fs.readdirSync(replica), []);
});

test('snapshot sessions: a replica bootstrapping from session 1 applies its frames and skips what it must; a replica in sync ignores them', async () => {
  // In sync from the start: it sees a session begin (for someone else) and ignores its frames.
  const S = (o: object) => ({ ...o, session: 1 }) as never;
  const K = (o: object) => ({ ...o, skipIn: 1 }) as never;
  const s = new StreamBuilder('snap')
    .add({ type: FrameType.CREATE, path: 'live', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.SNAPSHOT_BEGIN, id: 1, full: true, request: 'me' })
    .add(S({ type: FrameType.PURGE, path: '' }))
    .add(S({ type: FrameType.CREATE, path: 'live', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T }))
    .add(S({ type: FrameType.OPEN, handle: 9, path: 'live' }))
    .add(S({ type: FrameType.WRITE, handle: 9, offset: 0 }), Buffer.from('snapshot'))
    .add(S({ type: FrameType.RELEASE, handle: 9, times: T }))
    // A live change to an entry the session has not reached: the bootstrapping replica skips it.
    .add(K({ type: FrameType.MKDIR, path: 'later', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T }))
    .add(S({ type: FrameType.MKDIR, path: 'later', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T }))
    .add({ type: FrameType.SNAPSHOT_END, id: 1 })
    .add({ type: FrameType.MKDIR, path: 'after', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T })
    .end();
  const inSync = path.join(dir, 'insync');
  await new Mirror({ replica: inSync }).run(chunks(s.bytes()));
  assert.deepEqual(fs.readdirSync(inSync).sort(), ['after', 'later', 'live']);
  assert.equal(fs.readFileSync(path.join(inSync, 'live'), 'utf8'), '', 'the session frames were not applied');
  // Bootstrapping: it starts at its session's begin frame (what came before is dropped), and a
  // stale file in the replica goes with the PURGE.
  const boot = path.join(dir, 'boot');
  fs.mkdirSync(boot);
  fs.writeFileSync(path.join(boot, 'stale'), 'old');
  const logs: string[] = [];
  const m = new Mirror({ replica: boot, bootstrap: 'snapshot', request: 'me', log: (l) => logs.push(l) });
  const result = await m.run(chunks(Buffer.concat([s.list[0]!, ...s.list.slice(2)])));
  assert.equal(result.seq, 12n);
  assert.deepEqual(fs.readdirSync(boot).sort(), ['after', 'later', 'live']);
  assert.equal(fs.readFileSync(path.join(boot, 'live'), 'utf8'), 'snapshot');
  assert.match(logs.join('\n'), /bootstrap done at frame #10/);
  // Without --bootstrap, a non-empty directory that was no replica is not replaced by a snapshot.
  const other = path.join(dir, 'other');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'precious'), 'keep');
  const fromStart = new StreamBuilder('first-sync')
    .add({ type: FrameType.SNAPSHOT_BEGIN, id: 1, full: true })
    .add(S({ type: FrameType.PURGE, path: '' }))
    .add({ type: FrameType.SNAPSHOT_END, id: 1 })
    .end();
  await assert.rejects(new Mirror({ replica: other }).run(chunks(fromStart.bytes())), (e: unknown) => e instanceof TfsError && e.code === 'TFS_REFUSED');
  assert.equal(fs.readFileSync(path.join(other, 'precious'), 'utf8'), 'keep');
});
