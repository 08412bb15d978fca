import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FrameType } from '../shared/frame';
import { OpInput, Times } from '../shared/ops';
import { StreamBuilder } from '../shared/stream-builder';
import { MAX_HANDLES } from '../mirror/replay';
import { WebSocketServer } from 'ws';
import { BIN, exitOf, freePort, start, tempDir, waitFor } from './harness';

const T: Times = [1_700_000_000_000_000_000n, 1_700_000_000_000_000_000n];
const file = (p: string, mode = 0o100644): OpInput => ({ type: FrameType.CREATE, path: p, mode, uid: 0, gid: 0, times: T, parentTimes: T });

/** A tree outside every replica: its digest proves that nothing outside changed. */
function makeCanary(base: string): string {
  const canary = path.join(base, 'canary');
  fs.mkdirSync(path.join(canary, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(canary, 'f1'), 'precious');
  fs.writeFileSync(path.join(canary, 'sub', 'f2'), 'also precious');
  return canary;
}

/** Paths, types, modes, owners, sizes, contents and link targets of a tree (symlinks not followed). */
function digest(root: string): string {
  const h = createHash('sha256');
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const p = path.join(root, rel, name);
      const st = fs.lstatSync(p);
      h.update(`${rel}/${name} ${st.mode} ${st.uid} ${st.gid} ${st.size} ${st.nlink}\n`);
      if (st.isFile()) h.update(fs.readFileSync(p));
      else if (st.isSymbolicLink()) h.update(fs.readlinkSync(p));
      else if (st.isDirectory()) walk(path.join(rel, name));
    }
  };
  walk('');
  return h.digest('hex');
}

/**
 * A broadcaster that serves `stream` to whoever connects (after reading its HELLO), then closes.
 * Returns the socket's path.
 */
async function hostileBroadcaster(t: TestContext, dir: string, stream: Buffer): Promise<string> {
  const sock = path.join(dir, `evil-${Math.random().toString(16).slice(2)}.sock`);
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', () => socket.end(stream));
  });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  t.after(() => server.close());
  return sock;
}

interface Case {
  name: string;
  ops: [OpInput, Buffer?][];
  /** Before the mirror runs (inside the replica only). */
  plant?: (replica: string, canary: string) => void;
  exit: number;
  stderr: RegExp;
  after?: (replica: string) => void;
  args?: string[];
}

const cases: Case[] = [
  { name: 'a path that climbs', ops: [[file('../canary/pwn')]], exit: 3, stderr: /frame #1: .*'\.\.'.*\[TFS_HOSTILE_PATH\]|frame #1: .*\[TFS_HOSTILE_PATH\]/ },
  { name: 'an absolute path', ops: [[file('/tmp/pwn')]], exit: 3, stderr: /frame #1: .*\[TFS_HOSTILE_PATH\]/ },
  {
    name: 'a symlink made by the stream, then a path through it',
    ops: [[{ type: FrameType.SYMLINK, path: 'l', target: '../canary', uid: 0, gid: 0, times: T, parentTimes: T }], [file('l/pwn')]],
    exit: 3,
    stderr: /frame #2: .*\[TFS_HOSTILE_PATH\]/,
  },
  {
    name: 'a symlink to a file outside, then writes, truncation, times and xattrs through it',
    ops: [
      [{ type: FrameType.SYMLINK, path: 'l', target: '/nonexistent/../canary/f1', uid: 0, gid: 0, times: T, parentTimes: T }],
      [{ type: FrameType.TRUNCATE, path: 'l', size: 0, times: T }],
    ],
    exit: 3,
    stderr: /frame #2: .*\[TFS_HOSTILE_PATH\]/,
  },
  {
    name: 'a symlink planted in the replica before the stream names it',
    plant: (replica, canary) => fs.symlinkSync(canary, path.join(replica, 'd')),
    ops: [[file('d/pwn')]],
    exit: 3,
    stderr: /frame #1: .*\[TFS_HOSTILE_PATH\]/,
  },
  {
    name: 'OPEN of a planted symlink to a file outside',
    plant: (replica, canary) => fs.symlinkSync(path.join(canary, 'f1'), path.join(replica, 'f')),
    ops: [[{ type: FrameType.OPEN, handle: 1, path: 'f' }], [{ type: FrameType.WRITE, handle: 1, offset: 0 }, Buffer.from('pwned')]],
    exit: 3,
    stderr: /frame #1: .*\[TFS_HOSTILE_PATH\]/,
  },
  {
    name: 'a hard link to a file outside',
    ops: [[{ type: FrameType.LINK, path: 'h', from: '../canary/f1', parentTimes: T }]],
    exit: 3,
    stderr: /frame #1: .*\[TFS_HOSTILE_PATH\]/,
  },
  {
    name: 'a hard link to a planted symlink, then a write through it',
    plant: (replica, canary) => fs.symlinkSync(path.join(canary, 'f1'), path.join(replica, 's')),
    ops: [[{ type: FrameType.LINK, path: 'h', from: 's', parentTimes: T }], [{ type: FrameType.OPEN, handle: 1, path: 'h' }]],
    exit: 3,
    stderr: /frame #\d: .*\[TFS_HOSTILE_PATH\]/,
  },
  {
    name: 'a device node (/dev/mem)',
    ops: [[{ type: FrameType.MKNOD, path: 'mem', mode: 0o020666, rdev: (1 << 8) | 1, uid: 0, gid: 0, times: T, parentTimes: T }]],
    exit: 3,
    stderr: /frame #1: .*character device \(1:1\).*--allow-devices.*\[TFS_REFUSED\]/,
  },
  {
    name: 'a setuid-root program and a file capability',
    ops: [[file('suid', 0o104755)], [{ type: FrameType.SETXATTR, path: 'suid', name: 'security.capability', flags: 0 }, Buffer.from('0100000200000080000000000000000000000000', 'hex')]],
    exit: 0,
    stderr: /setuid\/setgid bits are not applied.*\n(.*\n)*.*file capabilities \(security\.capability\) are not applied/,
    after: (replica) => {
      assert.equal(fs.statSync(path.join(replica, 'suid')).mode & 0o6000, 0, 'no setuid bit');
      assert.throws(() => execFileSync('getfattr', ['-n', 'security.capability', path.join(replica, 'suid')], { stdio: 'pipe' }), /No such attribute/, 'no file capability');
    },
  },
  {
    name: 'a 16 EiB sparse file (a write at the largest offset a frame can carry)',
    ops: [[file('big')], [{ type: FrameType.OPEN, handle: 1, path: 'big' }], [{ type: FrameType.WRITE, handle: 1, offset: Number.MAX_SAFE_INTEGER - 4 }, Buffer.from('boom')]],
    exit: 1,
    stderr: /frame #3: WRITE .*(EFBIG|EINVAL).*\[TFS_APPLY_FAILED\]/,
  },
  {
    name: `more than ${MAX_HANDLES} handles`,
    ops: [[file('f')], ...Array.from({ length: MAX_HANDLES + 1 }, (_, i): [OpInput] => [{ type: FrameType.OPEN, handle: i + 1, path: 'f' }])],
    exit: 3,
    stderr: new RegExp(`frame #${MAX_HANDLES + 2}: OPEN handle ${MAX_HANDLES + 1}: ${MAX_HANDLES} files are open for writing already.*\\[TFS_REFUSED\\]`),
  },
  {
    name: 'paths of 4095 bytes, with names of 255 at every depth, then one byte more',
    ops: (() => {
      const ops: [OpInput][] = [];
      let p = '';
      for (let i = 0; i < 15; i++) {
        p = p === '' ? 'd'.repeat(255) : `${p}/${String(i % 10).repeat(255)}`;
        ops.push([{ type: FrameType.MKDIR, path: p, mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T }]);
      }
      const rest = 4095 - p.length - 1;
      ops.push([file(`${p}/${'x'.repeat(rest)}`)]);
      ops.push([file(`${p}/${'y'.repeat(rest + 1)}`)]);
      return ops;
    })(),
    exit: 3,
    stderr: /frame #17: .*\[TFS_HOSTILE_PATH\]/,
  },
];

test('a hostile broadcaster: no crafted stream creates, changes or follows anything outside REPLICA; each is refused naming the frame, or its privileges are dropped', { timeout: 300_000 }, async (t) => {
  const base = tempDir(t, 'hostile');
  const canary = makeCanary(base);
  const before = digest(canary);
  for (const [i, c] of cases.entries()) {
    const replica = path.join(base, `r${i}`);
    fs.mkdirSync(replica);
    c.plant?.(replica, canary);
    const builder = new StreamBuilder(`evil-${i}`);
    for (const [op, data] of c.ops) builder.add(op, data);
    const sock = await hostileBroadcaster(t, base, builder.end().bytes());
    const mirror = start(t, process.execPath, [BIN.mirror, '--reconnect-max', '1', '--from', sock, ...(c.args ?? []), replica]);
    const status = await exitOf(mirror, 120_000);
    assert.equal(status, c.exit, `${c.name}: exit ${status}\n${mirror.stderr()}`);
    assert.match(mirror.stderr(), c.stderr, c.name);
    c.after?.(replica);
    assert.equal(digest(canary), before, `${c.name}: the canary is untouched`);
  }
  const expected = new Set(['canary', ...cases.flatMap((_, i) => [`r${i}`, `.r${i}.tfs-mirror.db`, `.r${i}.tfs-mirror.db-wal`, `.r${i}.tfs-mirror.db-shm`])]);
  const stray = fs.readdirSync(base).filter((n) => !expected.has(n) && !n.startsWith('evil-'));
  assert.deepEqual(stray, [], 'nothing was made beside the replicas');
});

test('a hostile broadcaster races: a directory of the replica swapped for a symlink to the outside while the stream writes into it', { timeout: 120_000 }, async (t) => {
  const base = tempDir(t, 'hostile-race');
  const canary = makeCanary(base);
  const before = digest(canary);
  const replica = path.join(base, 'replica');
  fs.mkdirSync(replica);
  const builder = new StreamBuilder('evil-race').add({ type: FrameType.MKDIR, path: 'd', mode: 0o40755, uid: 0, gid: 0, times: T, parentTimes: T });
  for (let i = 0; i < 3000; i++) {
    builder.add(file(`d/f${i}`));
    builder.add({ type: FrameType.OPEN, handle: i + 1, path: `d/f${i}` });
    builder.add({ type: FrameType.WRITE, handle: i + 1, offset: 0 }, Buffer.from(`pwned ${i}`));
    builder.add({ type: FrameType.RELEASE, handle: i + 1, times: T });
  }
  const sock = await hostileBroadcaster(t, base, builder.end().bytes());
  // The second process: swaps replica/d for a symlink to the canary and back, as fast as it can.
  const stop = path.join(base, 'stop');
  const swapper = start(t, 'bash', ['-c', `cd '${replica}'; until [ -e '${stop}' ]; do if [ -d d ] && [ ! -L d ]; then mv d d.real 2>/dev/null && ln -s '${canary}' d; rm -f d; mv d.real d 2>/dev/null; fi; done`]);
  await waitFor(() => fs.existsSync(replica), 1000, 'the replica');
  // Run after run (each resumes from its cursor), the mirror either wins a race or meets the
  // symlink, or a missing directory, and stops: never a byte goes outside.
  const outcomes = new Map<string, number>();
  for (let run = 0; run < 40; run++) {
    const mirror = start(t, process.execPath, [BIN.mirror, '--reconnect-max', '1', '--from', sock, replica]);
    const status = await exitOf(mirror, 100_000);
    const code = /\[(TFS_[A-Z_]+)\]/.exec(mirror.stderr())?.[1] ?? String(status);
    assert.ok(status === 0 || code === 'TFS_HOSTILE_PATH' || code === 'TFS_APPLY_FAILED', `exit ${status}: ${mirror.stderr()}`);
    outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
    assert.equal(digest(canary), before, 'the canary is untouched');
    if (status === 0) break;
  }
  fs.writeFileSync(stop, '');
  await exitOf(swapper);
  assert.equal(digest(canary), before, 'the canary is untouched');
  t.diagnostic(`mirror runs: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
});

test('a hostile broadcaster and a mirror that is not root: foreign owners are dropped with a note', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'hostile-owner');
  const home = path.join(base, 'home');
  const replica = path.join(home, 'replica');
  fs.mkdirSync(home);
  fs.chownSync(home, 1001, 1001);
  fs.chmodSync(base, 0o755);
  const stream = new StreamBuilder('evil-owner')
    .add({ type: FrameType.CREATE, path: 'f', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T })
    .add({ type: FrameType.CHOWN, path: 'f', uid: 0, gid: 0, mode: 0o100644 })
    .end()
    .bytes();
  const sock = await hostileBroadcaster(t, base, stream);
  fs.chmodSync(sock, 0o666);
  const mirror = start(t, 'setpriv', ['--reuid', '1001', '--regid', '1001', '--clear-groups', process.execPath, BIN.mirror, '--reconnect-max', '1', '--from', sock, replica]);
  assert.equal(await exitOf(mirror), 0, mirror.stderr());
  assert.match(mirror.stderr(), /not running as root: owners are not replicated/);
  assert.equal(fs.statSync(path.join(replica, 'f')).uid, 1001);
});

test('a hostile broadcaster over WebSocket: a message over the frame cap stops the mirror, and it does not retry', { timeout: 60_000 }, async (t) => {
  const base = tempDir(t, 'hostile-ws');
  const port = await freePort();
  const wss = new WebSocketServer({ host: '127.0.0.1', port });
  t.after(() => wss.close());
  let served = 0;
  wss.on('connection', (ws) => {
    served++;
    ws.once('message', () => ws.send(Buffer.alloc(16 * 1024 * 1024 + 16, 1)));
    ws.on('error', () => {});
  });
  const mirror = start(t, process.execPath, [BIN.mirror, '--reconnect-delay', '100', '--from', `ws://127.0.0.1:${port}/`, path.join(base, 'r')]);
  assert.equal(await exitOf(mirror), 3, mirror.stderr());
  assert.match(mirror.stderr(), /sent a message over 16777216 bytes \[TFS_FRAME_TOO_LARGE\]/);
  assert.equal(served, 1, 'no retry');
});
