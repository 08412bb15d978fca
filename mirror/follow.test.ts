import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Broadcaster } from '../broadcast/server';
import { TfsError } from '../shared/errors';
import { FrameType } from '../shared/frame';
import { FrameLogWriter } from '../shared/framelog';
import { StreamBuilder } from '../shared/stream-builder';
import { Follower } from './follow';
import { Mirror } from './mirror';
import { BroadcastSource } from './source';

const T = [1n, 2n] as const;

function temp(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-follow-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A stream that makes directories d1..dn. */
function dirsStream(id: string, n: number): StreamBuilder {
  const s = new StreamBuilder(id);
  for (let i = 1; i <= n; i++) s.add({ type: FrameType.MKDIR, path: `d${i}`, mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T });
  return s.end();
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

test('a mirror follows across a broadcaster that dies and comes back on its log, and ends with everything', async (t) => {
  const dir = temp(t);
  const socketPath = path.join(dir, 'sock');
  const logDir = path.join(dir, 'log');
  const replica = path.join(dir, 'replica');
  const s = dirsStream('across', 200);
  const lines: string[] = [];
  const mirror = new Mirror({ replica });
  const follower = new Follower(mirror, (hello) => BroadcastSource.connect(socketPath, hello), { firstDelayMs: 10, maxDelayMs: 50, log: (m) => lines.push(m) });
  const first = new Broadcaster({ socketPath, logDir });
  await first.listen();
  const input = new PassThrough();
  const firstRun = first.run(input).catch(() => {});
  const following = follower.run();
  for (const f of s.list.slice(0, 120)) input.write(f);
  await until(() => fs.existsSync(path.join(replica, 'd100')));
  // The broadcaster's input is cut: it stops, and its clients see the connection end without the end frame.
  input.end();
  await firstRun;
  await until(() => lines.length >= 2);
  // The rest of the stream reaches the log from elsewhere (a journal's spool), and a new
  // broadcaster serves that log: the mirror reconnects and resumes after its last frame.
  const writer = FrameLogWriter.open(logDir);
  for (const f of s.list.slice(120, 150)) writer.append([f]);
  const second = new Broadcaster({ socketPath, logDir, lingerMs: 2000 });
  await second.listen();
  const secondRun = second.run(null);
  for (const f of s.list.slice(150)) writer.append([f]);
  writer.close();
  const result = await following;
  await secondRun;
  assert.equal(result.seq, 201n);
  assert.equal(fs.readdirSync(replica).length, 200);
  assert.match(lines.join('\n'), /reconnecting in \d+ ms \(attempt 1\)/);
});

test('a refusal is not retried: another stream stops the mirror at once', async (t) => {
  const dir = temp(t);
  const socketPath = path.join(dir, 'sock');
  const replica = path.join(dir, 'replica');
  await new Mirror({ replica }).run((async function* () {
    yield dirsStream('mine', 2).bytes();
  })());
  const b = new Broadcaster({ socketPath });
  await b.listen();
  const input = new PassThrough();
  const running = b.run(input);
  input.write(dirsStream('theirs', 5).list[0]);
  const lines: string[] = [];
  const follower = new Follower(new Mirror({ replica }), (hello) => BroadcastSource.connect(socketPath, hello), { firstDelayMs: 10, log: (m) => lines.push(m) });
  await assert.rejects(follower.run(), (e: unknown) => e instanceof TfsError && e.code === 'TFS_STREAM_MISMATCH' && /the broadcaster refused: this broadcaster serves stream theirs; the replica follows stream mine/.test(e.message) && /--restart/.test(e.hint ?? ''));
  assert.deepEqual(lines, [], 'no reconnect attempt');
  input.end(Buffer.concat(dirsStream('theirs', 5).list.slice(1)));
  await running;
});

test('a broadcaster that is not there is retried with growing waits, up to the limit', async (t) => {
  const dir = temp(t);
  const lines: string[] = [];
  const follower = new Follower(new Mirror({ replica: path.join(dir, 'r') }), (hello) => BroadcastSource.connect(path.join(dir, 'nobody'), hello), {
    firstDelayMs: 5,
    maxDelayMs: 20,
    maxAttempts: 4,
    log: (m) => lines.push(m),
  });
  await assert.rejects(follower.run(), /gave up after 4 attempts in a row: cannot connect to the broadcaster/);
  assert.deepEqual(
    lines.map((l) => /reconnecting in (\d+) ms \(attempt (\d) of 4\)/.exec(l)?.slice(1).join('/')),
    ['5/1', '10/2', '20/3', '20/4'],
  );
});
