import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FrameDecoder } from '../shared/decoder';
import { FrameType } from '../shared/frame';
import { BIN, dirs, exitOf, start, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';

// Writes made on libfuse's threads without JavaScript (journal/fuse/order.c) and the operations
// JavaScript makes for other processes must reach the stream in the order the store saw them.

/** A program that keeps writing through two handles of `f` (one O_APPEND) until `stop` exists. */
const WRITER = `
const fs = require('fs');
const [f, stop, seedArg] = process.argv.slice(1);
let seed = Number(seedArg);
const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
const fd = fs.openSync(f, 'w+');
const app = fs.openSync(f, 'a');
let n = 0;
while (!fs.existsSync(stop)) {
  const buf = Buffer.alloc(1 + rand(200000), n & 0xff);
  if (rand(4) === 0) fs.writeSync(app, buf);
  else fs.writeSync(fd, buf, 0, buf.length, rand(1 << 20));
  n++;
}
console.log(n);
`;

/**
 * A program that keeps truncating, renaming and chmodding `f` and `g` (whichever exists) until
 * `stop` exists. (The kernel serializes a truncate with the writes to the same file; the store
 * order matters across files, and for the stream itself: whole frames, one sequence.)
 */
const RACER = `
const fs = require('fs');
const [f, g, stop, seedArg] = process.argv.slice(1);
let seed = Number(seedArg);
const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
let here = f, there = g, n = 0;
while (!fs.existsSync(stop)) {
  const op = rand(3);
  if (op === 0) fs.truncateSync(here, rand(1 << 20));
  else if (op === 1) { fs.renameSync(here, there); [here, there] = [there, here]; }
  else fs.chmodSync(here, 0o600 | rand(0o100));
  n++;
}
console.log(n);
`;

/** WRITE frames of a saved stream, by who made them: the native path packs a fixmap, msgpackr a map16. */
function writeFrames(stream: string): { native: number; js: number } {
  const counts = { native: 0, js: 0 };
  for (const frame of new FrameDecoder().push(fs.readFileSync(stream))) {
    if (frame.type !== FrameType.WRITE) continue;
    if (frame.meta[0] === 0x83) counts.native++;
    else counts.js++;
  }
  return counts;
}

test('three processes write natively while another truncates, renames and chmods their files: the stream stays whole and the replica equals the store', { timeout: 120_000 }, async (t) => {
  const base = tempDir(t, 'native');
  const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
  const stream = path.join(base, 'stream');
  const stop = path.join(base, 'stop');
  const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, 'sh', ['-c', `tee '${stream}' | '${process.execPath}' '${BIN.mirror}' --quiet '${replica}'`]);
  for (let round = 0; round < 2; round++) {
    fs.rmSync(stop, { force: true });
    const names = [0, 1, 2].map((i) => [path.join(mnt!, `f${i}`), path.join(mnt!, `g${i}`)] as const);
    const writers = names.map(([f], i) => start(t, process.execPath, ['-e', WRITER, f, stop, String(round * 10 + i + 1)], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await waitFor(() => names.every(([f]) => fs.existsSync(f)), 5000, 'the writers to create their files');
    const racers = names.map(([f, g], i) => start(t, process.execPath, ['-e', RACER, f, g, stop, String(round * 10 + i + 7)], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await new Promise((r) => setTimeout(r, 2500));
    fs.writeFileSync(stop, '');
    for (const p of [...writers, ...racers]) assert.equal(await exitOf(p), 0, p.stderr());
    if (round === 0) for (const [f, g] of names) for (const x of [f, g]) fs.rmSync(x, { force: true });
  }
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  assert.equal(treeDiff(store!, replica!), '', 'the replica equals the store');
  const counts = writeFrames(stream);
  assert.ok(counts.native > 100, `most writes went native (${JSON.stringify(counts)})`);
  assert.ok(counts.js >= 12, `each handle's first write went through JavaScript (${JSON.stringify(counts)})`);
});

test('a reader that dies while writes go native: every write succeeds, and the journal names the first frame never taken', { timeout: 120_000 }, async (t) => {
  const base = tempDir(t, 'native-epipe');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const taken = path.join(base, 'taken');
  const { journal, reader } = await startPipeline(t, store!, mnt!, 'sh', ['-c', `head -c 3000000 > '${taken}'`]);
  const data = Buffer.alloc(32 << 20, 3);
  fs.writeFileSync(path.join(mnt!, 'big'), data);
  assert.equal(await exitOf(reader), 0);
  fs.appendFileSync(path.join(mnt!, 'big'), data);
  assert.equal(fs.statSync(path.join(store!, 'big')).size, 2 * data.length, 'the store has every write');
  unmount(mnt!);
  assert.equal(await exitOf(journal), 1, journal.stderr());
  const decoder = new FrameDecoder();
  const whole = [...decoder.push(fs.readFileSync(taken))];
  assert.ok(!decoder.idle, 'head stopped inside a frame');
  assert.ok(whole.some((fr) => fr.type === FrameType.WRITE && fr.meta[0] === 0x83 && fr.data.length > 0), 'the reader took native frames');
  const first = whole.length;
  assert.match(journal.stderr(), new RegExp(`JOURNAL READER GONE \\(EPIPE\\): frames from #${first} on are NOT delivered`));
  assert.match(journal.stderr(), new RegExp(`frames from #${first} on never reached the reader \\[TFS_NOT_DELIVERED\\]`));
});
