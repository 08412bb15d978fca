import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Fuse from 'fuse-native';
import { FrameDecoder } from '../shared/decoder';
import { FrameType, frameTypeName } from '../shared/frame';
import { StreamBuilder } from '../shared/stream-builder';
import { decodeOp, Op } from '../shared/ops';
import { FrameSink } from './sink';
import { JournalFs } from './filesystem';

let dir: string;
let store: string;
let out: string;
let logs: string[];
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-jfs-'));
  store = path.join(dir, 'store');
  out = path.join(dir, 'frames');
  fs.mkdirSync(store);
  logs = [];
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const caller = () => ({ pid: 4242, uid: 0, gid: 0 });

const HEADER = new StreamBuilder('test').list[0]!;

/** A started sink on `fd`. */
function startedSink(fd: number): FrameSink {
  const sink = new FrameSink(fd, (m) => logs.push(m));
  sink.start(HEADER, 1n);
  return sink;
}

function journal(): { ops: Required<Fuse.Operations>; frames: () => Op[]; close: () => void } {
  const fd = fs.openSync(out, 'w');
  const fsys = new JournalFs(store, startedSink(fd), (m) => logs.push(m), caller);
  return {
    ops: fsys.operations() as Required<Fuse.Operations>,
    frames: () => [...new FrameDecoder().push(fs.readFileSync(out))].map(decodeOp).filter((o) => o.type !== FrameType.STREAM_HEADER),
    close: () => {
      fsys.close();
      fs.closeSync(fd);
    },
  };
}

/** Calls a fuse-native style handler and returns what it called back with. */
function call<A extends unknown[]>(handler: (...args: [...A, (code: number, value?: unknown) => void]) => void, ...args: A): [number, unknown] {
  let result: [number, unknown] | undefined;
  handler(...args, (code: number, value?: unknown) => (result = [code, value]));
  assert.ok(result, 'the handler called back synchronously');
  return result;
}

const names = (ops: Op[]) => ops.map((o) => frameTypeName(o.type));

test('opens and reads make no frames; the first write makes OPEN, then WRITE; release carries the times', () => {
  fs.writeFileSync(path.join(store, 'f'), 'hello');
  const j = journal();
  const [, fd] = call(j.ops.open, '/f', fs.constants.O_RDWR);
  const buf = Buffer.alloc(5);
  assert.deepEqual(call(j.ops.read, '/f', fd as number, buf, 5, 0), [5, undefined]);
  call(j.ops.getattr, '/f');
  call(j.ops.readdir, '/');
  assert.deepEqual(names(j.frames()), []);
  assert.deepEqual(call(j.ops.write, '/f', fd as number, Buffer.from('J'), 1, 0), [1, undefined]);
  call(j.ops.write, '/f', fd as number, Buffer.from('!'), 1, 5);
  call(j.ops.release, '/f', fd as number);
  const frames = j.frames();
  assert.deepEqual(names(frames), ['OPEN', 'WRITE', 'WRITE', 'RELEASE']);
  assert.equal(fs.readFileSync(path.join(store, 'f'), 'utf8'), 'Jello!');
  const release = frames[3] as Extract<Op, { type: typeof FrameType.RELEASE }>;
  assert.equal(release.times[1], fs.statSync(path.join(store, 'f'), { bigint: true }).mtimeNs);
  assert.deepEqual(frames[0]!.caller, caller());
  j.close();
});

test('fsync of a directory syncs the store directory and makes no frame', () => {
  fs.mkdirSync(path.join(store, 'd'));
  const j = journal();
  assert.equal(call(j.ops.fsyncdir, '/d', 0, 0)[0], 0);
  assert.equal(call(j.ops.fsyncdir, '/missing', 1, 0)[0], -2);
  assert.deepEqual(j.frames(), []);
  j.close();
});

test('O_APPEND writes carry the offset where the bytes landed, whatever offset the kernel gave', () => {
  fs.writeFileSync(path.join(store, 'log'), 'abc');
  const j = journal();
  const [, fd] = call(j.ops.open, '/log', fs.constants.O_WRONLY | fs.constants.O_APPEND);
  call(j.ops.write, '/log', fd as number, Buffer.from('de'), 2, 0);
  const w = j.frames().find((o) => o.type === FrameType.WRITE) as Extract<Op, { type: typeof FrameType.WRITE }>;
  assert.equal(w.offset, 3);
  assert.equal(fs.readFileSync(path.join(store, 'log'), 'utf8'), 'abcde');
  j.close();
});

test('a failing store call answers with its errno and makes no frame', () => {
  const j = journal();
  assert.equal(call(j.ops.getattr, '/missing')[0], -2);
  assert.equal(call(j.ops.unlink, '/missing')[0], -2);
  assert.equal(call(j.ops.mkdir, '/a/b/c', 0o755)[0], -2);
  fs.mkdirSync(path.join(store, 'd'));
  fs.writeFileSync(path.join(store, 'd', 'x'), '');
  assert.equal(call(j.ops.rmdir, '/d')[0], -39);
  assert.deepEqual(j.frames(), []);
  j.close();
});

test('if journaling throws, the operation that happened still succeeds and the loss is logged', () => {
  const fd = fs.openSync(out, 'w');
  const sink = startedSink(fd);
  sink.emit = () => {
    throw new Error('disk on fire');
  };
  const ops = new JournalFs(store, sink, (m) => logs.push(m), caller).operations() as Required<Fuse.Operations>;
  assert.equal(call(ops.mkdir, '/made', 0o755)[0], 0);
  assert.ok(fs.statSync(path.join(store, 'made')).isDirectory());
  assert.ok(logs.some((l) => /JOURNAL INCOMPLETE: mkdir .*disk on fire/.test(l)), logs.join('\n'));
  fs.closeSync(fd);
});

test('nothing is written before the sink starts; what was emitted before follows the header', () => {
  const fd = fs.openSync(out, 'w');
  const sink = new FrameSink(fd, (m) => logs.push(m));
  sink.emit({ type: FrameType.UNLINK, path: 'early', parentTimes: [1n, 2n] });
  assert.equal(fs.statSync(out).size, 0);
  sink.start(HEADER, 1n);
  const frames = [...new FrameDecoder().push(fs.readFileSync(out))].map(decodeOp);
  assert.deepEqual(frames.map((f) => [frameTypeName(f.type), f.seq]), [['STREAM_HEADER', 0n], ['UNLINK', 1n]]);
  fs.closeSync(fd);
});

test('a reader that goes away (EPIPE): reported once, operations go on, and the loss names the first frame it never took', () => {
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY);
  const sink = startedSink(w);
  const fsys = new JournalFs(store, sink, (m) => logs.push(m), caller);
  const ops = fsys.operations() as Required<Fuse.Operations>;
  for (let i = 0; i < 5; i++) assert.equal(call(ops.mkdir, `/d${i}`, 0o700)[0], 0);
  // The reader takes the header and the first two frames (#1, #2), then dies with #3..#5 unread in the pipe.
  for (let i = 0; i < 3; i++) {
    const head = Buffer.alloc(16);
    assert.equal(fs.readSync(r, head), 16);
    const rest = Buffer.alloc(head.readUInt32LE(0) - 16);
    assert.equal(fs.readSync(r, rest), rest.length);
  }
  fs.closeSync(r);
  assert.equal(sink.loss(), null, 'no loss is known while no write failed');
  for (let i = 5; i < 8; i++) assert.equal(call(ops.mkdir, `/d${i}`, 0o700)[0], 0);
  assert.equal(logs.filter((l) => /JOURNAL READER GONE \(EPIPE\)/.test(l)).length, 1);
  assert.equal(fs.readdirSync(store).length, 8);
  const loss = sink.loss();
  assert.ok(loss);
  assert.equal(loss.firstSeq, 3n, logs.join('\n'));
  assert.equal(loss.count, 6, 'frames #3 to #8 never reached a reader');
  fsys.close();
  fs.closeSync(w);
});

test('entries are created with the store\'s resulting mode, and the parent\'s times travel too', () => {
  const j = journal();
  call(j.ops.mkdir, '/d', 0o2750);
  const [, fd] = call(j.ops.create, '/d/f', 0o640, fs.constants.O_WRONLY);
  call(j.ops.release, '/d/f', fd as number);
  call(j.ops.symlink, 'f', '/d/s');
  const [mkdir, create, symlink] = j.frames() as Extract<Op, { type: 0x12 | 0x10 | 0x13 }>[];
  assert.equal(mkdir!.type, FrameType.MKDIR);
  assert.equal((mkdir as { mode: number }).mode, fs.statSync(path.join(store, 'd')).mode);
  assert.equal((create as { mode: number }).mode, 0o100640);
  assert.equal(symlink!.type, FrameType.SYMLINK);
  assert.equal(symlink!.parentTimes[1], fs.statSync(path.join(store, 'd'), { bigint: true }).mtimeNs);
  j.close();
});

test('no store call follows a final symlink out of the store', () => {
  const outside = path.join(dir, 'outside');
  fs.writeFileSync(outside, 'precious');
  fs.chmodSync(outside, 0o600);
  fs.symlinkSync(outside, path.join(store, 'l'));
  const j = journal();
  assert.equal(call(j.ops.truncate, '/l', 0)[0], -40);
  assert.equal(call(j.ops.open, '/l', fs.constants.O_WRONLY)[0], -40);
  assert.equal(call(j.ops.create, '/l', 0o644, fs.constants.O_WRONLY)[0], -40);
  assert.equal(call(j.ops.chmod, '/l', 0o777)[0], -95);
  call(j.ops.utimens, '/l', 1n, 2n);
  call(j.ops.chown, '/l', 7, 7);
  assert.equal(fs.readFileSync(outside, 'utf8'), 'precious');
  const st = fs.statSync(outside, { bigint: true });
  assert.equal(Number(st.mode) & 0o777, 0o600);
  assert.equal(Number(st.uid), 0);
  assert.notEqual(st.mtimeNs, 2n);
  assert.deepEqual(names(j.frames()), ['UTIMENS', 'CHOWN']);
  j.close();
});

test('a second creator that raced past the kernel opens the file instead of recreating it', () => {
  const j = journal();
  const [, fd1] = call(j.ops.create, '/f', 0o644, fs.constants.O_RDWR);
  call(j.ops.write, '/f', fd1 as number, Buffer.from('first'), 5, 0);
  const [code, fd2] = call(j.ops.create, '/f', 0o644, fs.constants.O_RDWR);
  assert.equal(code, 0);
  assert.equal(call(j.ops.create, '/f', 0o644, fs.constants.O_RDWR | fs.constants.O_EXCL)[0], -17);
  assert.equal(fs.readFileSync(path.join(store, 'f'), 'utf8'), 'first');
  assert.deepEqual(names(j.frames()), ['CREATE', 'OPEN', 'WRITE']);
  call(j.ops.release, '/f', fd1 as number);
  call(j.ops.release, '/f', fd2 as number);
  j.close();
});
