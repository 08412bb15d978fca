import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { FrameDecoder } from '../shared/decoder';
import { FrameType } from '../shared/frame';
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
function client(socketPath: string): Promise<{ seqs: bigint[]; types: number[] }> {
  return new Promise((resolve, reject) => {
    const seqs: bigint[] = [];
    const types: number[] = [];
    const dec = new FrameDecoder();
    const s = net.createConnection(socketPath, () => s.write(helloFrame()));
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

test('a late client gets the header, then every frame from when it joined, with no gap', async () => {
  const { b, socketPath, input, running, done } = await broadcaster();
  const frames = streamOf(20).list;
  const early = client(socketPath);
  await until(() => b.clientCount === 1);
  for (const f of frames.slice(0, 10)) input.write(f);
  await new Promise((r) => setTimeout(r, 30));
  const late = client(socketPath);
  await until(() => b.clientCount === 2);
  for (const f of frames.slice(10)) input.write(f);
  input.end();
  await running;
  const [e, l] = await Promise.all([early, late]);
  assert.equal(e.seqs.length, 22);
  assert.equal(l.seqs[0], 0n);
  const first = Number(l.seqs[1]);
  assert.ok(first >= 1 && first <= 10, `late client starts at ${first}`);
  assert.deepEqual(l.seqs.slice(1), Array.from({ length: 22 - first }, (_, i) => BigInt(first + i)));
  done();
});

test('a client that dies does not stop the others; a bad hello is dropped', async () => {
  const { b, socketPath, input, running, done } = await broadcaster();
  const good = client(socketPath);
  const dying = net.createConnection(socketPath);
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
