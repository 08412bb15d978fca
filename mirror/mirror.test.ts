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

test('a replica that joins a stream late skips writes through files opened before it joined, also after a restart', async () => {
  const replica = path.join(dir, 'r');
  const logs: string[] = [];
  const s = new StreamBuilder('live')
    .add({ type: FrameType.CREATE, path: 'early', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.OPEN, handle: 1, path: 'early' })
    .add({ type: FrameType.WRITE, handle: 1, offset: 0 }, Buffer.from('before'))
    .add({ type: FrameType.WRITE, handle: 1, offset: 6 }, Buffer.from('after'))
    .add({ type: FrameType.CREATE, path: 'late', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.OPEN, handle: 2, path: 'late' })
    .add({ type: FrameType.WRITE, handle: 2, offset: 0 }, Buffer.from('seen'))
    .add({ type: FrameType.RELEASE, handle: 2, times: T })
    .add({ type: FrameType.WRITE, handle: 1, offset: 11 }, Buffer.from('!'))
    .end();
  const joined = [s.list[0]!, ...s.list.slice(4)];
  await assert.rejects(new Mirror({ replica, log: (m) => logs.push(m) }).run(chunks(Buffer.concat(joined.slice(0, 6)))), /cut off/);
  const result = await new Mirror({ replica, log: (m) => logs.push(m) }).run(chunks(Buffer.concat(joined)));
  assert.equal(result.seq, 10n);
  assert.equal(fs.readFileSync(path.join(replica, 'late'), 'utf8'), 'seen');
  assert.equal(fs.existsSync(path.join(replica, 'early')), false);
  assert.ok(logs.some((l) => /joining stream live at frame #4/.test(l)));
  assert.equal(logs.filter((l) => /handle 1 was opened before this replica joined/.test(l)).length, 2, 'once per run');
  const fresh = path.join(dir, 'fresh');
  await assert.rejects(new Mirror({ replica: fresh }).run(chunks(Buffer.concat([s.list[0]!, s.list[1]!, s.list[3]!]))), /SEQUENCE_GAP|expected frame #2/);
});
