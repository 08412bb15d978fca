import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { FrameDecoder } from '../shared/decoder';
import { FrameEncoder } from '../shared/encoder';
import { FrameType, MAGIC, PROTOCOL_VERSION } from '../shared/frame';
import { FrameLogWriter } from '../shared/framelog';
import { OpInput, decodeOp, opMeta } from '../shared/ops';
import { StreamBuilder } from '../shared/stream-builder';
import { helloFrame } from '../mirror/source';
import { Broadcaster, BroadcastOptions } from './server';

/** A listening broadcaster fed from a PassThrough; `done()` removes its directory. */
async function broadcaster(options: Omit<BroadcastOptions, 'socketPath'> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bc-'));
  const socketPath = path.join(dir, 's');
  const b = new Broadcaster({ socketPath, ...options });
  await b.listen();
  const input = new PassThrough();
  return { b, socketPath, input, running: b.run(input), done: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

function streamOf(n: number): StreamBuilder {
  const s = new StreamBuilder('bcast');
  for (let i = 0; i < n; i++) s.add({ type: FrameType.WRITE, handle: 1, offset: i * 100 }, Buffer.alloc(100, i));
  return s.end();
}

/** A client that collects every frame's sequence number and type until the server closes. */
function client(socketPath: string, hello = helloFrame()): Promise<{ seqs: bigint[]; types: number[] }> {
  return new Promise((resolve, reject) => {
    const seqs: bigint[] = [];
    const types: number[] = [];
    const dec = new FrameDecoder();
    const s = net.createConnection(socketPath, () => s.write(hello));
    s.on('data', (c) => {
      for (const f of dec.push(c)) {
        seqs.push(f.seq);
        types.push(f.type);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve({ seqs, types }));
  });
}

function range(from: number, to: number): bigint[] {
  return Array.from({ length: to - from + 1 }, (_, i) => BigInt(from + i));
}

async function until(cond: () => boolean) {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

test('min-clients holds the stream; every client gets the header and all frames in order, then the end', async () => {
  const { b, socketPath, input, running, done } = await broadcaster({ minClients: 3 });
  const stream = streamOf(50);
  input.write(stream.bytes());
  input.end();
  const clients = [client(socketPath), client(socketPath)];
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(b.clientCount, 2);
  clients.push(client(socketPath));
  await running;
  const results = await Promise.all(clients);
  for (const r of results) {
    assert.deepEqual(r.seqs, Array.from({ length: 52 }, (_, i) => BigInt(i)));
    assert.equal(r.types[0], FrameType.STREAM_HEADER);
    assert.equal(r.types.at(-1), FrameType.END);
  }
  assert.equal(fs.existsSync(socketPath), false, 'socket removed');
  done();
});

test('a new client gets the whole stream while the broadcaster holds its start; once it does not, it is told to bootstrap', async () => {
  const { b, socketPath, input, running, done } = await broadcaster({ clientBuffer: 65536 });
  const s = new StreamBuilder('late');
  for (let i = 0; i < 40; i++) s.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(10_000, i));
  s.end();
  const early = resumingClient(socketPath);
  await until(() => b.clientCount === 1);
  for (const f of s.list.slice(0, 3)) input.write(f);
  const soon = resumingClient(socketPath);
  await until(() => b.clientCount === 2);
  for (const f of s.list.slice(3, 30)) input.write(f);
  await until(() => early.seqs.length === 30);
  const late = resumingClient(socketPath);
  await late.closed;
  assert.match(late.refusals[0] ?? '', /^TFS_HISTORY_GONE: the replica is new, and this broadcaster no longer holds the stream's start/);
  for (const f of s.list.slice(30)) input.write(f);
  input.end();
  await running;
  await Promise.all([early.closed, soon.closed]);
  assert.deepEqual(early.seqs, [0n, ...range(1, 41)]);
  assert.deepEqual(soon.seqs, [0n, ...range(1, 41)], 'joined after #2, yet got the stream from #1');
  done();
});

test('a client that dies does not stop the others; a bad hello is dropped', async () => {
  const { b, socketPath, input, running, done } = await broadcaster();
  const good = client(socketPath);
  const dying = net.createConnection(socketPath, () => dying.write(helloFrame()));
  await until(() => b.clientCount === 2);
  const rude = net.createConnection(socketPath, () => rude.write(Buffer.alloc(64, 0xff)));
  rude.on('error', () => {});
  const rudeClosed = new Promise((r) => rude.on('close', r));
  dying.destroy();
  await rudeClosed;
  await until(() => b.clientCount === 1);
  input.end(streamOf(5).bytes());
  await running;
  assert.equal((await good).seqs.length, 7);
  done();
});

test('input that ends without an end frame is an error', async () => {
  const { input, running, done } = await broadcaster();
  input.end(Buffer.concat(streamOf(3).list.slice(0, 3)));
  await assert.rejects(running, /without an end frame/);
  done();
});

test('slow clients: with disconnect, one that stops reading is dropped and the others get everything', async () => {
  const { b, socketPath, input, running, done } = await broadcaster({ clientBuffer: 65536, slowClient: 'disconnect', slowClientGraceMs: 300 });
  const good = client(socketPath);
  const stalled = net.createConnection(socketPath, () => stalled.write(helloFrame()));
  stalled.pause();
  const stalledClosed = new Promise((r) => stalled.on('close', r));
  stalled.on('error', () => {});
  await until(() => b.clientCount === 2);
  const big = new StreamBuilder('slow');
  for (let i = 0; i < 200; i++) big.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(64 * 1024, i));
  input.end(big.end().bytes());
  await running;
  stalled.resume(); // a paused socket never reads the end of its connection
  await stalledClosed;
  assert.equal((await good).seqs.length, 202);
  done();
});

test('slow clients: with wait, the stream holds until the slow client reads, and nothing is lost', async () => {
  const started = await broadcaster({ clientBuffer: 65536 });
  const { b, socketPath, input, done } = started;
  let settled = false;
  const running = started.running.finally(() => (settled = true));
  const dec = new FrameDecoder();
  let frames = 0;
  const slow = net.createConnection(socketPath, () => slow.write(helloFrame()));
  slow.pause();
  const closed = new Promise((r) => slow.on('close', r));
  slow.on('data', (c) => {
    for (const _ of dec.push(c)) frames++;
  });
  await until(() => b.clientCount === 1);
  const big = new StreamBuilder('wait');
  for (let i = 0; i < 100; i++) big.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(64 * 1024, i));
  input.end(big.end().bytes());
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(settled, false, 'the stream waits for the slow client');
  slow.resume();
  await running;
  await closed;
  assert.equal(frames, 102);
  done();
});

/** A client that says HELLO with a cursor and collects frames (and any refusal) until the server closes. */
function resumingClient(socketPath: string, streamId?: string, fromSeq?: bigint, opts: { paused?: boolean } = {}) {
  const seqs: bigint[] = [];
  const refusals: string[] = [];
  const dec = new FrameDecoder();
  const s = net.createConnection(socketPath, () => s.write(helloFrame(streamId, fromSeq)));
  if (opts.paused) s.pause();
  s.on('data', (c) => {
    for (const f of dec.push(c)) {
      if (f.type === FrameType.ERROR) {
        const op = decodeOp(f) as { code: string; message: string };
        refusals.push(`${op.code}: ${op.message}`);
      } else seqs.push(f.seq);
    }
  });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  return { socket: s, seqs, refusals, closed };
}


test('with a log: a client resumes from its cursor, from disk while behind and live after, with no gap and no duplicate', async (t) => {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bclog-'));
  t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
  const { b, socketPath, input, running, done } = await broadcaster({ logDir: path.join(logDir, 'log'), clientBuffer: 65536 });
  const s = new StreamBuilder('logged');
  for (let i = 0; i < 400; i++) s.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(1000 + i, i));
  s.end();
  for (const f of s.list.slice(0, 300)) input.write(f);
  await until(() => fs.existsSync(path.join(logDir, 'log', 'header')));
  await new Promise((r) => setTimeout(r, 50));
  // #5 is long gone from the 64 KiB window: it comes from the log, then the client catches up.
  const behind = resumingClient(socketPath, 'logged', 5n);
  const fresh = resumingClient(socketPath);
  await until(() => b.clientCount === 2);
  for (const f of s.list.slice(300)) input.write(f);
  input.end();
  await running;
  await Promise.all([behind.closed, fresh.closed]);
  assert.deepEqual(behind.seqs, [0n, ...range(6, 401)]);
  assert.deepEqual(fresh.seqs, [0n, ...range(1, 401)], 'a new replica gets the whole stream while the log holds its start');
  done();
});

test('with a log: a client that stops reading slows neither the input nor the others, and gets everything when it reads again', async (t) => {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bclog-'));
  t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
  const { b, socketPath, input, running, done } = await broadcaster({ logDir: path.join(logDir, 'log'), clientBuffer: 65536 });
  const stalled = resumingClient(socketPath, undefined, undefined, { paused: true });
  const good = resumingClient(socketPath);
  await until(() => b.clientCount === 2);
  const big = new StreamBuilder('stall');
  for (let i = 0; i < 300; i++) big.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(64 * 1024, i));
  const bytes = big.end().bytes();
  let consumed = false;
  input.end(bytes, () => (consumed = true));
  await until(() => good.seqs.length === 302);
  assert.ok(consumed, 'the whole 19 MiB input was taken while one client read nothing');
  stalled.socket.resume();
  await running;
  await stalled.closed;
  assert.deepEqual(stalled.seqs, [0n, ...range(1, 301)]);
  done();
});

test('refusals say what to do: another stream, or a cursor older than what is kept (with and without a log)', async (t) => {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bclog-'));
  t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
  const s = new StreamBuilder('kept');
  for (let i = 0; i < 50; i++) s.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(20_000, i));
  s.end();
  // A log that keeps little: most of the stream is trimmed away as it comes.
  const withLog = await broadcaster({ logDir: path.join(logDir, 'log'), retain: { maxBytes: 1 }, clientBuffer: 65536 });
  const keep = resumingClient(withLog.socketPath);
  await until(() => withLog.b.clientCount === 1);
  for (const f of s.list) withLog.input.write(f);
  await until(() => keep.seqs.length === 52);
  const other = resumingClient(withLog.socketPath, 'another-stream', 3n);
  await other.closed;
  assert.match(other.refusals[0]!, /^TFS_STREAM_MISMATCH: this broadcaster serves stream kept; the replica follows stream another-stream/);
  withLog.input.end();
  await withLog.running;
  withLog.done();
  const noLog = await broadcaster({ clientBuffer: 65536 });
  const first = resumingClient(noLog.socketPath);
  await until(() => noLog.b.clientCount === 1);
  for (const f of s.list.slice(0, 40)) noLog.input.write(f);
  await until(() => first.seqs.length === 40);
  const old = resumingClient(noLog.socketPath, 'kept', 2n);
  await old.closed;
  assert.match(old.refusals[0]!, /^TFS_HISTORY_GONE: the replica needs frames from #3 on; this broadcaster keeps no log/);
  noLog.input.end(Buffer.concat(s.list.slice(40)));
  await noLog.running;
  noLog.done();
});

test('a client that says nothing is dropped after the handshake time; the socket is 0600', async () => {
  const { b, socketPath, input, running, done } = await broadcaster({ handshakeMs: 200 });
  assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
  const mute = net.createConnection(socketPath);
  mute.on('error', () => {});
  const closedAt = await new Promise<number>((r) => mute.on('close', () => r(Date.now())));
  assert.ok(closedAt > 0);
  assert.equal(b.clientCount, 0);
  input.end(streamOf(2).bytes());
  await running;
  done();
});

test('--socket-group: the socket is 0660 and belongs to the group; --max-clients: one more is refused with TFS_BUSY', async () => {
  const { b, socketPath, input, running, done } = await broadcaster({ socketGroup: 65534, maxClients: 1 });
  const st = fs.statSync(socketPath);
  assert.equal(st.mode & 0o777, 0o660);
  assert.equal(st.gid, 65534);
  const first = net.createConnection(socketPath, () => first.write(helloFrame()));
  first.on('data', () => {});
  await until(() => b.clientCount === 1);
  const second = await new Promise<string>((resolve) => {
    const dec = new FrameDecoder();
    const s = net.createConnection(socketPath, () => s.write(helloFrame()));
    s.on('data', (c) => {
      for (const f of dec.push(c)) if (f.type === FrameType.ERROR) resolve((decodeOp(f) as { code: string }).code);
    });
  });
  assert.equal(second, 'TFS_BUSY');
  input.end(streamOf(2).bytes());
  await running;
  done();
});

test('following a log that another writer fills: served to its end frame', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bcfollow-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const logDir = path.join(dir, 'log');
  const s = new StreamBuilder('followed');
  for (let i = 0; i < 100; i++) s.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc(5000, i));
  s.end();
  const writer = FrameLogWriter.open(logDir, { segmentBytes: 100_000 });
  writer.setHeader(s.list[0]!);
  for (const f of s.list.slice(1, 40)) writer.append([f]);
  const socketPath = path.join(dir, 's');
  const b = new Broadcaster({ socketPath, logDir });
  await b.listen();
  const running = b.run(null);
  const c = resumingClient(socketPath, 'followed', 10n);
  await until(() => c.seqs.length === 30);
  for (const f of s.list.slice(40)) {
    writer.append([f]);
    await new Promise((r) => setImmediate(r));
  }
  await running;
  await c.closed;
  assert.deepEqual(c.seqs, [0n, ...range(11, 101)]);
  writer.close();
});

test('fuzz: what clients send (random bytes, mutated HELLO and REQUEST frames, oversized frames) never takes the broadcaster down; a good client is served after them', async () => {
  const { b, socketPath, input, running, done } = await broadcaster({ handshakeMs: 300 });
  const stream = streamOf(5);
  input.write(stream.list[0]);
  const seed = Number(process.env['TFS_FUZZ_SEED'] ?? 2009);
  let x = seed || 1;
  const pick = (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const hello = helloFrame('bcast', 0n);
  const inputs: Buffer[] = [];
  for (let i = 0; i < 300; i++) {
    const m = Buffer.from(hello);
    switch (i % 5) {
      case 0:
        inputs.push(Buffer.from(Array.from({ length: 1 + pick(200) }, () => pick(256))));
        break;
      case 1:
        m[pick(m.length)] = pick(256);
        inputs.push(m);
        break;
      case 2: {
        // A length field that promises a huge frame.
        m.writeUInt32LE(0xfffffff0, 0);
        inputs.push(m);
        break;
      }
      case 3:
        inputs.push(Buffer.concat([hello, hello, helloFrame('other', 5n)]));
        break;
      default:
        inputs.push(m.subarray(0, pick(m.length)));
    }
  }
  for (let i = 0; i < inputs.length; i += 20) {
    await Promise.all(
      inputs.slice(i, i + 20).map(
        (bytes) =>
          new Promise<void>((resolve) => {
            const s = net.createConnection(socketPath, () => s.end(bytes));
            s.on('data', () => {});
            s.on('error', () => resolve());
            s.on('close', () => resolve());
          }),
      ),
    );
  }
  const good = client(socketPath);
  await until(() => b.clientCount === 1);
  for (const f of stream.list.slice(1)) input.write(f);
  input.end();
  const got = await good;
  assert.deepEqual(got.seqs, range(0, 6), `seed ${seed}: a good client gets the whole stream after 300 bad ones`);
  await running;
  assert.equal(b.clientCount, 0);
  done();
});

test('a client waiting for its snapshot holds nothing: the stream flows while the journal answers late, and the client starts at its SNAPSHOT_BEGIN', { timeout: 30_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bcheld-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A journal's control socket that takes the request and answers only when told.
  const control = path.join(dir, 'ctl');
  let asked: ((reply: string) => void) | undefined;
  const ctl = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => (asked = (reply) => sock.end(reply + '\n')));
  });
  await new Promise<void>((resolve) => ctl.listen(control, resolve));
  t.after(() => ctl.close());
  const socketPath = path.join(dir, 's');
  const b = new Broadcaster({ socketPath, clientBuffer: 65536 });
  await b.listen();
  const input = new PassThrough();
  const running = b.run(input);
  const enc = new FrameEncoder(0n);
  const frame = (op: OpInput, data?: Buffer) => Buffer.from(enc.encode(op.type, opMeta(op), data));
  input.write(frame({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId: 'held', startNs: 0n, firstSeq: 1n, origin: 'changes', control }));
  // A replica in sync (its cursor at the start), and a new one that asks for a snapshot.
  const plain = client(socketPath, helloFrame('held', 0n));
  await until(() => b.clientCount === 1);
  const waiting = client(socketPath, helloFrame(undefined, undefined, 'snapshot', 'tok'));
  await until(() => asked !== undefined);
  // Far more than the window holds goes by before the journal answers.
  for (let i = 0; i < 200; i++) input.write(frame({ type: FrameType.WRITE, handle: 1, offset: i * 1024 }, Buffer.alloc(1024, i)));
  input.write(frame({ type: FrameType.SNAPSHOT_BEGIN, id: 1, full: true, request: 'tok' }));
  for (let i = 0; i < 3; i++) input.write(frame({ type: FrameType.MKDIR, path: `d${i}`, mode: 0o40755, uid: 0, gid: 0, times: [1n, 1n], parentTimes: [1n, 1n], session: 1 }));
  input.end(frame({ type: FrameType.END, reason: 'test' }));
  const got = await plain;
  assert.equal(got.seqs.at(-1), 205n, 'the stream flowed to its end while the journal had not answered');
  asked!(JSON.stringify({ session: 1, begin: '201' }));
  const late = await waiting;
  assert.deepEqual(late.seqs, [0n, 201n, 202n, 203n, 204n, 205n], 'the waiting client got the header, then everything from its SNAPSHOT_BEGIN');
  await running;
});

test('a client that goes away before its copy is repaired makes the broadcaster tell the journal to forget it', { timeout: 30_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bcforget-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const control = path.join(dir, 'ctl');
  const requests: unknown[] = [];
  const ctl = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.on('data', (d) => {
      for (const line of d.toString().split('\n').filter(Boolean)) {
        const req = JSON.parse(line) as Record<string, unknown>;
        requests.push(req);
        if (req['hold']) sock.write(JSON.stringify({ from: '1' }) + '\n');
      }
    });
  });
  await new Promise<void>((resolve) => ctl.listen(control, resolve));
  t.after(() => ctl.close());
  const socketPath = path.join(dir, 's');
  const b = new Broadcaster({ socketPath });
  await b.listen();
  const input = new PassThrough();
  const running = b.run(input);
  const enc = new FrameEncoder(0n);
  input.write(Buffer.from(enc.encode(FrameType.STREAM_HEADER, opMeta({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId: 'forget', startNs: 0n, firstSeq: 1n, origin: 'changes', control }))));
  const s = net.createConnection(socketPath, () => s.write(helloFrame(undefined, undefined, 'hold', 'copy-1')));
  s.on('data', () => {});
  s.on('error', () => {});
  await until(() => b.clientCount === 1 && requests.length === 1);
  s.destroy();
  await until(() => requests.length === 2);
  assert.deepEqual(requests, [{ hold: 'copy-1' }, { forget: 'copy-1' }]);
  input.end(Buffer.from(enc.encode(FrameType.END, opMeta({ type: FrameType.END, reason: 'test' }))));
  await running;
});
