import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { FrameDecoder } from '../shared/decoder';
import { FrameType } from '../shared/frame';
import { helloFrame } from '../mirror/source';
import { BIN, Proc, dirs, exitOf, freePort, start, startPipeline, tempDir, treeDiff, unmount, waitFor } from './harness';

const CHURN = path.join(__dirname, 'churn.js');


/** A token file (mode 0600) and a second one with another token. */
function tokens(base: string): { good: string; bad: string } {
  const good = path.join(base, 'token');
  const bad = path.join(base, 'other-token');
  fs.writeFileSync(good, 'b2f1c0de-the-right-token-9a7e5d3c\n', { mode: 0o600 });
  fs.writeFileSync(bad, 'not-the-right-token-at-all-0000\n', { mode: 0o600 });
  return { good, bad };
}

/** A self-signed certificate for 127.0.0.1, made with openssl. */
function selfSigned(base: string): { cert: string; key: string } {
  const cert = path.join(base, 'cert.pem');
  const key = path.join(base, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key };
}

/** The HTTP answer to a raw request on a TCP connection (or '' if it was closed without one). */
function rawExchange(port: number, request: string | null, ms = 15_000): Promise<{ reply: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const began = Date.now();
    const socket = net.createConnection(port, '127.0.0.1');
    let reply = '';
    socket.on('connect', () => {
      if (request !== null) socket.write(request);
    });
    socket.on('data', (d) => (reply += d.toString()));
    socket.on('error', () => {});
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the connection stayed open ${ms} ms`));
    }, ms);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closedAfterMs: Date.now() - began });
    });
  });
}

function mirrorOver(t: TestContext, url: string, replica: string, extra: string[]): Proc {
  return start(t, process.execPath, [BIN.mirror, '--preserve-privileges', '--reconnect-delay', '200', '--from', url, ...extra, replica]);
}

test('WebSocket: three replicas over ws:// with a token and one over wss:// with a self-signed certificate equal the store after a workload; wrong, missing and untrusted credentials are refused before any frame and not retried', { timeout: 180_000 }, async (t) => {
  const base = tempDir(t, 'ws');
  const [store, mnt, r1, r2, r3, r4, r5] = dirs(base, 'store', 'mnt', 'r1', 'r2', 'r3', 'r4', 'r5');
  const { good, bad } = tokens(base);
  const { cert, key } = selfSigned(base);
  const spool = path.join(base, 'spool');
  const [port, tlsPort] = [await freePort(), await freePort()];
  // ws:// on the stream itself; wss:// served by a second broadcaster that follows the same log.
  const { journal, reader: plain } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.broadcast, '--log', spool, '--ws', `127.0.0.1:${port}`, '--token-file', good, '--min-clients', '3'], ['--spool', spool]);
  await waitFor(() => /listening on ws:/.test(plain.stderr()), 10_000, 'the ws broadcaster');
  const secure = start(t, process.execPath, [BIN.broadcast, '--log', spool, '--ws', `127.0.0.1:${tlsPort}`, '--token-file', good, '--tls-cert', cert, '--tls-key', key, '--linger', '1s', '--handshake-time', '1s'], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitFor(() => /listening on wss:/.test(secure.stderr()), 10_000, `the wss broadcaster: ${secure.stderr()}`);
  const url = `ws://127.0.0.1:${port}/`;
  const tlsUrl = `wss://127.0.0.1:${tlsPort}/`;

  // Refusals: each exits at once with what was wrong, and the broadcaster logs who it was.
  const noToken = mirrorOver(t, url, r5!, []);
  assert.equal(await exitOf(noToken, 15_000), 1, noToken.stderr());
  assert.match(noToken.stderr(), /HTTP 401: no token .*\[TFS_UNAUTHORIZED\]/);
  const wrong = mirrorOver(t, url, r5!, ['--token-file', bad]);
  assert.equal(await exitOf(wrong, 15_000), 1, wrong.stderr());
  assert.match(wrong.stderr(), /HTTP 401: wrong token .*\[TFS_UNAUTHORIZED\]/);
  const untrusted = mirrorOver(t, tlsUrl, r5!, ['--token-file', good]);
  assert.equal(await exitOf(untrusted, 15_000), 1, untrusted.stderr());
  assert.match(untrusted.stderr(), /certificate this mirror does not trust.*\[TFS_UNAUTHORIZED\]\n.*--ca FILE/);
  const wrongScheme = mirrorOver(t, `wss://127.0.0.1:${port}/`, r5!, ['--token-file', good]);
  assert.equal(await exitOf(wrongScheme, 15_000), 1, wrongScheme.stderr());
  assert.match(wrongScheme.stderr(), /does not speak TLS as asked.*\[TFS_WRONG_PEER\]/);
  assert.match(plain.stderr(), /127\.0\.0\.1:\d+ refused: no token/);
  assert.match(plain.stderr(), /127\.0\.0\.1:\d+ refused: wrong token/);
  assert.deepEqual(fs.readdirSync(r5!), [], 'a refused mirror applied nothing');
  const loose = fs.mkdtempSync(path.join(base, 'loose-'));
  const looseToken = path.join(loose, 'token');
  fs.writeFileSync(looseToken, 'b2f1c0de-the-right-token-9a7e5d3c\n', { mode: 0o644 });
  const readable = mirrorOver(t, url, r5!, ['--token-file', looseToken]);
  assert.equal(await exitOf(readable, 15_000), 2);
  assert.match(readable.stderr(), /may be read by others \(mode 644\).*\[TFS_USAGE\]\nchmod 600/);

  const mirrors = [r1!, r2!, r3!].map((r) => mirrorOver(t, url, r, ['--token-file', good]));
  mirrors.push(mirrorOver(t, tlsUrl, r4!, ['--token-file', good, '--ca', cert]));
  await waitFor(() => (plain.stderr().match(/follows from #1/g) ?? []).length === 3, 20_000, `three ws clients: ${plain.stderr()}`);
  const stop = path.join(base, 'stop');
  const churn = start(t, process.execPath, [CHURN, path.join(mnt!, 'work'), '1101', stop], { stdio: ['ignore', 'pipe', 'pipe'] });
  execFileSync('tar', ['-cf', path.join(base, 'x.tar'), '-C', path.join(__dirname, '..', '..', 'shared'), '.']);
  execFileSync('tar', ['-xf', path.join(base, 'x.tar'), '-C', mnt!]);
  await new Promise((r) => setTimeout(r, 1500));
  fs.writeFileSync(stop, '');
  assert.equal(await exitOf(churn), 0, churn.stderr());
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(plain), 0, plain.stderr());
  for (const m of mirrors) assert.equal(await exitOf(m), 0, m.stderr());
  assert.equal(await exitOf(secure), 0, secure.stderr());
  for (const r of [r1!, r2!, r3!, r4!]) assert.equal(treeDiff(store!, r), '', `replica ${path.basename(r)} equals the store`);
  assert.doesNotMatch(mirrors[3]!.stderr(), /reconnecting/, 'the wss client kept its connection past the handshake time');
});

test('WebSocket limits: an oversized handshake, a client that says nothing, a connection rate per address, and 200 clients at once against --max-clients 20 while the journal keeps going', { timeout: 180_000 }, async (t) => {
  const base = tempDir(t, 'ws-limits');
  const [store, mnt] = dirs(base, 'store', 'mnt');
  const { good } = tokens(base);
  const port = await freePort();
  const { journal, reader: broadcast } = await startPipeline(t, store!, mnt!, process.execPath, [
    BIN.broadcast, '--ws', `127.0.0.1:${port}`, '--token-file', good, '--max-clients', '20', '--max-connection-rate', '206', '--handshake-time', '1s',
  ]);
  await waitFor(() => /listening on ws:/.test(broadcast.stderr()), 10_000, 'the broadcaster');

  const big = await rawExchange(port, `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  assert.match(big.reply, /^HTTP\/1\.1 431/, 'an oversized handshake is refused');
  const silent = await rawExchange(port, null);
  assert.equal(silent.reply, '', 'nothing is sent to a client that says nothing');
  assert.ok(silent.closedAfterMs >= 900 && silent.closedAfterMs < 5000, `a silent client is dropped after the handshake time (${silent.closedAfterMs} ms)`);
  await waitFor(() => /dropped: no WebSocket handshake within 1000 ms/.test(broadcast.stderr()), 5000, 'the drop in the log');

  // Refused clients that reset the connection, or keep their side open, neither take the
  // broadcaster down nor stay connected.
  const upgradeWith = (auth: string) => `GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${auth}\r\n\r\n`;
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve) => {
      const s = net.createConnection(port, '127.0.0.1', () => {
        s.write(upgradeWith('wrong-wrong-wrong-wrong'));
        setTimeout(() => (s.resetAndDestroy(), resolve()), 30);
      });
      s.on('error', () => resolve());
    });
  }
  const held = await rawExchange(port, upgradeWith('wrong-wrong-wrong-wrong'));
  assert.match(held.reply, /^HTTP\/1\.1 401/);
  assert.ok(held.closedAfterMs < 1000, `a refused client is closed once answered (${held.closedAfterMs} ms)`);
  assert.equal(broadcast.child.exitCode, null, 'the broadcaster is still up');

  // 200 clients at once, each saying HELLO: 20 are admitted and get the stream, the rest HTTP 503.
  const token = fs.readFileSync(good, 'utf8').trim();
  const outcomes = await Promise.all(
    Array.from({ length: 200 }, () =>
      new Promise<{ status: number; ws?: WebSocket; frames: number[] }>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { authorization: `Bearer ${token}` } });
        const result = { status: 0, ws, frames: [] as number[] };
        const decoder = new FrameDecoder();
        ws.on('unexpected-response', (_req, res) => {
          result.status = res.statusCode ?? 0;
          ws.terminate();
          resolve(result);
        });
        ws.on('open', () => {
          result.status = 101;
          ws.send(helloFrame());
        });
        ws.on('message', (data: Buffer) => {
          for (const f of decoder.push(data)) result.frames.push(f.type);
          if (result.frames.length === 1) resolve(result);
        });
        ws.on('error', () => resolve(result));
      }),
    ),
  );
  const admitted = outcomes.filter((o) => o.status === 101);
  assert.equal(admitted.length, 20, `the cap holds: ${outcomes.map((o) => o.status).join(',')}`);
  assert.equal(outcomes.filter((o) => o.status === 503).length, 180);
  assert.ok(admitted.every((o) => o.frames[0] === FrameType.STREAM_HEADER), 'every admitted client gets the stream header');
  // The journal never stalled: a write on the mount goes through and reaches the admitted clients.
  const began = Date.now();
  fs.writeFileSync(path.join(mnt!, 'after'), 'written while 200 clients came');
  assert.ok(Date.now() - began < 2000, 'the mount did not stall');
  await waitFor(() => admitted.every((o) => o.frames.includes(FrameType.CREATE)), 10_000, 'the change at every admitted client');
  for (const o of admitted) o.ws!.terminate();

  // The connection rate of one address: 206 a minute, spent by now (a few come back each second).
  const upgrade = `GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}\r\n\r\n`;
  const more = await Promise.all(Array.from({ length: 30 }, () => rawExchange(port, upgrade)));
  assert.ok(more.filter((r) => /^HTTP\/1\.1 429/.test(r.reply)).length >= 20, more.map((r) => r.reply.split('\r\n')[0]).join(','));
  assert.match(broadcast.stderr(), /refused: more than 206 connections a minute from this address \(HTTP 429\)/);
  unmount(mnt!);
  assert.equal(await exitOf(journal), 0, journal.stderr());
  assert.equal(await exitOf(broadcast), 0, broadcast.stderr());
});

test('WebSocket: --ws on an address other machines can reach needs a token and TLS, or a flag that says it is insecure', async (t) => {
  const base = tempDir(t, 'ws-insecure');
  const { good } = tokens(base);
  const port = await freePort();
  const run = (args: string[]) => {
    try {
      execFileSync(process.execPath, [BIN.broadcast, ...args], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10_000 });
      return { status: 0, stderr: '' };
    } catch (err) {
      const e = err as { status: number; stderr: string };
      return { status: e.status, stderr: e.stderr };
    }
  };
  const noToken = run(['--ws', `0.0.0.0:${port}`]);
  assert.equal(noToken.status, 2);
  assert.match(noToken.stderr, /without --token-file anyone could read the stream \[TFS_USAGE\]\n.*--insecure-no-token/);
  const noTls = run(['--ws', `0.0.0.0:${port}`, '--token-file', good]);
  assert.equal(noTls.status, 2);
  assert.match(noTls.stderr, /without TLS the token and the stream travel in clear \[TFS_USAGE\]\n.*--insecure-plaintext/);
  // A mirror does not send its token in clear to another machine either.
  const mirror = start(t, process.execPath, [BIN.mirror, '--from', `ws://192.0.2.1:${port}/`, '--token-file', good, path.join(base, 'r')]);
  assert.equal(await exitOf(mirror), 2);
  assert.match(mirror.stderr(), /the token would travel in clear to another machine/);
});
