import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TfsError } from './errors';
import { FrameType } from './frame';
import { FrameLog, FrameLogWriter, LogCursor } from './framelog';
import { StreamBuilder } from './stream-builder';

function tempLog(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-log-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'log');
}

/** A stream of `n` operation frames of assorted sizes (seq 1..n), with its header. */
function stream(n: number, seed = 1): { header: Buffer; frames: Buffer[] } {
  const b = new StreamBuilder(`stream-${seed}`);
  for (let i = 1; i <= n; i++) {
    if (i % 7 === 0) b.add({ type: FrameType.UNLINK, path: `f${i}`, parentTimes: [1n, 2n] });
    else b.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc((i * 977 + seed) % 5000, i & 0xff));
  }
  return { header: b.list[0]!, frames: b.list.slice(1) };
}

function readAll(cursor: LogCursor, maxBytes?: number): Buffer[] {
  const out: Buffer[] = [];
  for (;;) {
    const got = cursor.read(maxBytes);
    if (got.length === 0) return out;
    for (const f of got) out.push(Buffer.from(f.bytes));
  }
}

test('frames read back exactly from every position, across segments, while appends go on', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(300);
  const w = FrameLogWriter.open(dir, { segmentBytes: 20_000 });
  w.setHeader(header);
  const live = w.cursor(1n);
  const seen: Buffer[] = [];
  for (const [i, f] of frames.entries()) {
    w.append([f.subarray(0, 20), f.subarray(20)]);
    if (i % 13 === 0) seen.push(...readAll(live, 3000));
  }
  seen.push(...readAll(live));
  assert.deepEqual(seen, frames, 'a reader that followed the appends saw every frame once, in order');
  assert.ok(fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).length > 10, 'many segments');
  assert.equal(w.lastSeq, 300n);
  assert.equal(w.firstSeq, 1n);
  w.close();
  const r = FrameLog.openReader(dir);
  assert.deepEqual(Buffer.from(r.header!), header);
  assert.equal(r.streamId, 'stream-1');
  for (let from = 1; from <= 300; from += 1) {
    const got = readAll(r.cursor(BigInt(from)), from % 2 === 0 ? 1 : 100_000);
    assert.equal(got.length, 301 - from);
    assert.ok(got[0]!.equals(frames[from - 1]!), `from #${from}`);
  }
  assert.deepEqual(readAll(r.cursor(301n)), [], 'past the end: nothing yet');
});

test('a cursor placed beyond what its reader last listed finds its frames once the reader looks again (a broadcaster serving a journal\'s spool)', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(300);
  const w = FrameLogWriter.open(dir, { segmentBytes: 20_000 });
  w.setHeader(header);
  for (const f of frames.slice(0, 50)) w.append([f]);
  const r = FrameLog.openReader(dir); // lists the segments holding #1..#50
  for (const f of frames.slice(50)) w.append([f]);
  const later = r.cursor(250n);
  assert.deepEqual(later.read(), [], 'not in the listing yet');
  r.refresh();
  assert.deepEqual(readAll(later), frames.slice(249), 'after a fresh listing, every frame from #250 on');
  w.close();
});

test('a reader of a log that holds only the header waits for the first frame (a broadcaster started on a new spool)', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(3);
  const w = FrameLogWriter.open(dir);
  w.setHeader(header);
  const r = FrameLog.openReader(dir);
  const cursor = r.cursor(r.lastSeq + 1n);
  assert.deepEqual(cursor.read(), [], 'nothing yet, and no HISTORY_GONE');
  // The moment the writer has made the first segment's file and not yet its index.
  fs.writeFileSync(path.join(dir, `${'1'.padStart(20, '0')}.seg`), '');
  r.refresh();
  assert.deepEqual(cursor.read(), [], 'a segment being created is not a gap');
  fs.rmSync(path.join(dir, `${'1'.padStart(20, '0')}.seg`));
  for (const f of frames) w.append([f]);
  r.refresh();
  assert.deepEqual(readAll(cursor), frames);
  w.close();
});

test('a torn or corrupt tail is cut back on open, and said; appends go on from the last whole frame', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(40);
  let w = FrameLogWriter.open(dir, { segmentBytes: 50_000 });
  w.setHeader(header);
  for (const f of frames.slice(0, 30)) w.append([f]);
  w.close();
  const lastSeg = () => path.join(dir, fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).sort().at(-1)!);
  // A writer that died in the middle of frame #31: half of it in the segment, no index entry.
  fs.appendFileSync(lastSeg(), frames[30]!.subarray(0, frames[30]!.length >> 1));
  const said: string[] = [];
  w = FrameLogWriter.open(dir, { log: (m) => said.push(m) });
  assert.equal(w.lastSeq, 30n);
  assert.match(said.join('\n'), /cut back \d+ bytes after frame #30 .*\(a torn frame\)/);
  for (const f of frames.slice(30, 35)) w.append([f]);
  w.close();
  // A corrupt byte inside frame #33 (an index that already counts it): #33 and after are cut.
  const seg = lastSeg();
  const bytes = fs.readFileSync(seg);
  const at = bytes.indexOf(frames[32]!) + 40;
  bytes[at]! ^= 0xff;
  fs.writeFileSync(seg, bytes);
  said.length = 0;
  w = FrameLogWriter.open(dir, { log: (m) => said.push(m) });
  assert.equal(w.lastSeq, 32n);
  assert.match(said.join('\n'), /after frame #32 .*checksum/);
  for (const f of frames.slice(32)) w.append([f]);
  w.close();
  assert.deepEqual(readAll(FrameLog.openReader(dir).cursor(1n)), frames);
});

test('an index that lags its segment (a crash between the two writes) is rebuilt from the segment', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(10);
  let w = FrameLogWriter.open(dir);
  w.setHeader(header);
  for (const f of frames) w.append([f]);
  w.close();
  const idx = path.join(dir, fs.readdirSync(dir).find((n) => n.endsWith('.idx'))!);
  fs.truncateSync(idx, 8 * 6);
  assert.equal(readAll(FrameLog.openReader(dir).cursor(1n)).length, 6, 'readers trust the index only');
  w = FrameLogWriter.open(dir);
  assert.equal(w.lastSeq, 10n);
  w.close();
  assert.deepEqual(readAll(FrameLog.openReader(dir).cursor(1n)), frames);
});

test('a corrupt frame in an older segment stops its reader with TFS_CORRUPT_FRAME naming the segment', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(60);
  const w = FrameLogWriter.open(dir, { segmentBytes: 20_000 });
  w.setHeader(header);
  for (const f of frames) w.append([f]);
  w.close();
  const first = path.join(dir, fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).sort()[0]!);
  const bytes = fs.readFileSync(first);
  bytes[100]! ^= 1;
  fs.writeFileSync(first, bytes);
  assert.throws(() => readAll(FrameLog.openReader(dir).cursor(1n)), (e: unknown) => e instanceof TfsError && e.code === 'TFS_CORRUPT_FRAME' && e.message.includes(path.basename(first)));
});

test('retention trims the oldest segments by size and age, never the last; older positions are HISTORY_GONE', (t) => {
  const dir = tempLog(t);
  const { header, frames } = stream(200);
  const w = FrameLogWriter.open(dir, { segmentBytes: 30_000 });
  w.setHeader(header);
  for (const f of frames) w.append([f]);
  const before = w.bytes;
  const trimmed = w.trim({ maxBytes: 100_000 });
  assert.ok(trimmed);
  assert.equal(trimmed.fromSeq, 1n);
  assert.equal(w.firstSeq, trimmed.toSeq + 1n);
  assert.ok(w.bytes <= 100_000 + 30_000 && w.bytes < before);
  assert.throws(() => w.cursor(1n).read(), (e: unknown) => e instanceof TfsError && e.code === 'TFS_HISTORY_GONE' && /bootstrap/.test(e.hint ?? ''));
  assert.deepEqual(readAll(w.cursor(w.firstSeq)), frames.slice(Number(w.firstSeq) - 1));
  // Age: every segment but the last is old.
  const old = Date.now() / 1000 - 3600;
  for (const n of fs.readdirSync(dir)) if (n.endsWith('.idx')) fs.utimesSync(path.join(dir, n), old, old);
  w.trim({ maxAgeMs: 60_000 });
  assert.equal(fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).length, 1);
  assert.equal(w.lastSeq, 200n);
  w.close();
});

test('one writer at a time', (t) => {
  const dir = tempLog(t);
  const w = FrameLogWriter.open(dir);
  assert.ok(FrameLogWriter.isWritten(dir));
  assert.throws(() => FrameLogWriter.open(dir), /being written by another process \(pid \d+\)/);
  w.close();
  assert.ok(!FrameLogWriter.isWritten(dir));
  FrameLogWriter.open(dir).close();
});

test('a reader in this process follows a writer in another one', { timeout: 60_000 }, async (t) => {
  const dir = tempLog(t);
  const n = 500;
  const { frames } = stream(n, 7);
  const child = spawn(process.execPath, ['-e', `
    const { FrameLogWriter } = require(${JSON.stringify(path.join(__dirname, 'framelog.js'))});
    const { StreamBuilder } = require(${JSON.stringify(path.join(__dirname, 'stream-builder.js'))});
    const { FrameType } = require(${JSON.stringify(path.join(__dirname, 'frame.js'))});
    const b = new StreamBuilder('stream-7');
    for (let i = 1; i <= ${n}; i++) {
      if (i % 7 === 0) b.add({ type: FrameType.UNLINK, path: 'f' + i, parentTimes: [1n, 2n] });
      else b.add({ type: FrameType.WRITE, handle: 1, offset: i }, Buffer.alloc((i * 977 + 7) % 5000, i & 0xff));
    }
    const w = FrameLogWriter.open(process.argv[1], { segmentBytes: 100000 });
    w.setHeader(b.list[0]);
    let i = 1;
    const tick = () => { for (let k = 0; k < 20 && i <= ${n}; k++) w.append([b.list[i++]]); if (i <= ${n}) setTimeout(tick, 2); else w.close(); };
    tick();
  `, dir], { stdio: 'inherit' });
  t.after(() => child.kill('SIGKILL'));
  while (!fs.existsSync(path.join(dir, 'header'))) await new Promise((r) => setTimeout(r, 5));
  const r = FrameLog.openReader(dir);
  const c = r.cursor(1n);
  const got: Buffer[] = [];
  const deadline = Date.now() + 30_000;
  while (got.length < n && Date.now() < deadline) {
    r.refresh();
    got.push(...readAll(c, 10_000));
    await new Promise((res) => setTimeout(res, 3));
  }
  assert.equal(got.length, n);
  assert.deepEqual(got, frames);
});
