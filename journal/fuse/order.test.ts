import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fuse from 'fuse-native';

// The native frame output (order.c) without a mount: what JavaScript and the native write path share.
const { native } = Fuse;
const EPIPE = os.constants.errno.EPIPE;

/** A pipe as a shell makes one: [read end, write end]. */
function pipe(dir: string): [number, number] {
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY);
  fs.unlinkSync(fifo);
  return [r, w];
}

/** A 32-byte frame head carrying `seq` (only the sequence number matters to the output). */
function frame(seq: bigint, bytes = 32): Buffer {
  const b = Buffer.alloc(bytes);
  b.writeBigUInt64LE(seq, 8);
  return b;
}

test('the output writes frames whole, keeps the next sequence number, and knows what a pipe\'s reader took', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-order-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [r, w] = pipe(dir);
  const next = new BigUint64Array(native.outOpen(w, 1));
  native.orderEnter();
  native.orderEnter(); // nested sections take the lock once
  assert.equal(native.outWrite([frame(1n, 48), Buffer.alloc(16, 7)], 1n), 0);
  assert.equal(native.outWrite([frame(2n)], 2n), 0);
  native.orderLeave();
  native.orderLeave();
  assert.equal(next[0], 3n, 'the next sequence number follows the last frame written');
  assert.deepEqual(native.outStatus(), [0, -1n, 1n], 'nothing taken yet: #1 is the first frame not known taken');
  const taken = Buffer.alloc(70);
  assert.equal(fs.readSync(r, taken), 70, 'the frames arrived in order, whole');
  assert.equal(taken.readBigUInt64LE(8), 1n);
  assert.equal(taken[60], 7);
  assert.deepEqual(native.outStatus(), [0, 1n, 2n], '#1 taken, #2 only partly');
  fs.readSync(r, Buffer.alloc(26));
  assert.deepEqual(native.outStatus(), [0, 2n, -1n]);
  fs.closeSync(r);
  assert.equal(native.outWrite([frame(3n)], 3n), EPIPE, 'a reader gone breaks the output');
  assert.equal(native.outWrite([frame(4n)], 4n), EPIPE, 'and it stays broken');
  assert.equal(next[0], 5n, 'frames still get their numbers (a spool may keep them)');
  assert.deepEqual(native.outStatus(), [EPIPE, 2n, 3n], '#3 is the first frame lost');
  assert.throws(() => native.outWrite(Array.from({ length: 9 }, () => frame(5n)), 5n), /at most 8 parts/);
  fs.closeSync(w);
});

test('a new output starts clean: a regular file takes everything written', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-order-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const fd = fs.openSync(path.join(dir, 'out'), 'w');
  const next = new BigUint64Array(native.outOpen(fd, 0));
  next[0] = 10n;
  assert.equal(native.outWrite([frame(10n)], 10n), 0);
  assert.deepEqual(native.outStatus(), [0, 10n, -1n]);
  assert.equal(fs.fstatSync(fd).size, 32);
  fs.closeSync(fd);
});
