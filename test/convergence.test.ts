import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import type Fuse from 'fuse-native';
import { FrameSink } from '../journal/sink';
import { StreamBuilder } from '../shared/stream-builder';
import { JournalFs } from '../journal/filesystem';
import { Mirror } from '../mirror/mirror';
import { dirs, tempDir, treeDiff } from './harness';
import { FrameDecoder } from '../shared/decoder';
import { FrameType } from '../shared/frame';
import { decodeOp } from '../shared/ops';
import { execFileSync } from 'node:child_process';

const NAMES = ['a', 'b', 'd', 'd/x', 'd/y', 'd/x/w', 'e', 'e/z', 'e/z/w'];
// Symlink targets stay inside the store: the handlers are called directly, without the kernel's
// symlink resolution in front of them, so nothing here may point at anything outside the test.
const arbName = fc.constantFrom(...NAMES);
const arbStep = fc.oneof(
  fc.record({ op: fc.constant('mkdir' as const), p: arbName, mode: fc.constantFrom(0o755, 0o700, 0o2775) }),
  fc.record({ op: fc.constant('create' as const), p: arbName, mode: fc.constantFrom(0o644, 0o600, 0o4755) }),
  fc.record({ op: fc.constant('open' as const), p: arbName }),
  fc.record({ op: fc.constant('write' as const), h: fc.nat(5), offset: fc.nat(70_000), bytes: fc.uint8Array({ minLength: 1, maxLength: 3000 }) }),
  fc.record({ op: fc.constant('ftruncate' as const), h: fc.nat(5), size: fc.nat(80_000) }),
  fc.record({ op: fc.constant('release' as const), h: fc.nat(5) }),
  fc.record({ op: fc.constant('truncate' as const), p: arbName, size: fc.nat(5000) }),
  fc.record({ op: fc.constant('rename' as const), p: arbName, to: arbName }),
  fc.record({ op: fc.constant('unlink' as const), p: arbName }),
  fc.record({ op: fc.constant('rmdir' as const), p: arbName }),
  fc.record({ op: fc.constant('link' as const), p: arbName, to: arbName }),
  fc.record({ op: fc.constant('symlink' as const), target: fc.constantFrom('a', 'x', '../a'), p: arbName }),
  fc.record({ op: fc.constant('chmod' as const), p: arbName, mode: fc.constantFrom(0o640, 0o1777, 0o4711) }),
  fc.record({ op: fc.constant('utimens' as const), p: arbName, a: fc.bigInt({ min: 0n, max: 2n ** 62n }), m: fc.bigInt({ min: 0n, max: 2n ** 62n }) }),
  fc.record({ op: fc.constant('setxattr' as const), p: arbName, value: fc.uint8Array({ maxLength: 40 }) }),
  fc.record({ op: fc.constant('removexattr' as const), p: arbName }),
  // A snapshot session begins (once a run), and its walk advances by n steps, between live changes.
  fc.record({ op: fc.constant('snapshot' as const) }),
  fc.record({ op: fc.constant('walk' as const), n: fc.nat(6) }),
  // A replica copied by other means: the journal tracks changes from 'hold', the copy is taken
  // at 'copy' (from the future of the hold), the repair session is asked for at 'repair'.
  fc.record({ op: fc.constant('copy' as const) }),
  fc.record({ op: fc.constant('repair' as const) }),
);
type Step = typeof arbStep extends fc.Arbitrary<infer S> ? S : never;

/**
 * Runs steps through the journal's handlers on `store`, writing the stream to `file`. A hold for a
 * copy starts with the run (its first frame is returned); the copy goes to `copyDir`.
 */
function journalRun(store: string, file: string, steps: Step[], request: string, copyDir: string): bigint {
  const fd = fs.openSync(file, 'w');
  const sink = new FrameSink(fd, () => {});
  sink.start(new StreamBuilder(`conv-${Math.random()}`).list[0]!, 1n);
  const journal = new JournalFs(store, sink, () => {}, () => ({ pid: 1, uid: 0, gid: 0 }));
  const ops = journal.operations() as Required<Fuse.Operations>;
  const open: number[] = [];
  // What libfuse passes as the path of an open file: its current name, null once it has none.
  const names = new Map<number, string | null>();
  const cb = () => {};
  let snapshotAsked = false;
  const holdFrom = journal.sessions.hold('copy');
  let copied = false;
  let repaired = false;
  const copy = () => {
    if (copied) return;
    copied = true;
    execFileSync('cp', ['-a', `${store}/.`, `${copyDir}/`]);
  };
  const repair = () => {
    if (repaired) return;
    copy();
    repaired = true;
    void journal.sessions.repair('copy');
  };
  const handle = (h: number) => open[h % Math.max(open.length, 1)];
  const opened = (p: string) => (code: number, fd?: number) => {
    if (code !== 0) return;
    open.push(fd!);
    names.set(fd!, p);
  };
  const renamed = (from: string, to: string) => (code: number) => {
    if (code !== 0 || from === to) return;
    for (const [fd, n] of names) {
      if (n === to) names.set(fd, null);
      else if (n !== null && (n === from || n.startsWith(from + '/'))) names.set(fd, to + n.slice(from.length));
    }
  };
  const unlinked = (p: string) => (code: number) => {
    if (code === 0) for (const [fd, n] of names) if (n === p) names.set(fd, null);
  };
  // The kernel resolves symlinks before FUSE calls a handler: a path through one never reaches
  // the journal. Called directly, the handlers must not be given such a path either.
  const throughSymlink = (rel: string) => {
    const parts = rel.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      try {
        if (fs.lstatSync(path.join(store, ...parts.slice(0, i))).isSymbolicLink()) return true;
      } catch {
        return false;
      }
    }
    return false;
  };
  for (const s of steps) {
    const p = '/' + ('p' in s ? s.p : '');
    if (throughSymlink(p.slice(1)) || ('to' in s && throughSymlink(s.to))) continue;
    switch (s.op) {
      case 'mkdir': ops.mkdir(p, s.mode, cb); break;
      case 'create': ops.create(p, s.mode, fs.constants.O_RDWR, opened(p)); break;
      case 'open': ops.open(p, fs.constants.O_RDWR, opened(p)); break;
      case 'write': { const h = handle(s.h); if (h !== undefined) ops.write(names.get(h) ?? null, h, Buffer.from(s.bytes), s.bytes.length, s.offset, cb); break; }
      case 'ftruncate': { const h = handle(s.h); if (h !== undefined) ops.ftruncate(names.get(h) ?? null, h, s.size, cb); break; }
      case 'release': { const h = handle(s.h); if (h !== undefined) { ops.release(null, h, cb); open.splice(open.indexOf(h), 1); } break; }
      case 'truncate': ops.truncate(p, s.size, cb); break;
      case 'rename': ops.rename(p, '/' + s.to, renamed(p, '/' + s.to)); break;
      case 'unlink': ops.unlink(p, unlinked(p)); break;
      case 'rmdir': ops.rmdir(p, cb); break;
      case 'link': ops.link(p, '/' + s.to, cb); break;
      case 'symlink': ops.symlink(s.target, p, cb); break;
      case 'chmod': ops.chmod(p, s.mode, cb); break;
      case 'utimens': ops.utimens(p, s.a, s.m, cb); break;
      case 'setxattr': ops.setxattr(p, 'user.k', Buffer.from(s.value), 0, 0, cb); break;
      case 'removexattr': ops.removexattr(p, 'user.k', cb); break;
      case 'snapshot': if (!snapshotAsked) { snapshotAsked = true; void journal.sessions.full(request); journal.sessions.turn(0); } break;
      case 'walk': for (let i = 0; i < s.n; i++) journal.sessions.turn(0); break;
      case 'copy': copy(); break;
      case 'repair': repair(); break;
    }
  }
  repair();
  // The sessions run to their end (the walk continues while files are still open, as on a mount).
  while (journal.sessions.turn(0));
  // Files still open are written once more after the sessions: the bootstrapped replicas must
  // know every handle, or know that its file has no name.
  for (const h of open) ops.write(names.get(h) ?? null, h, Buffer.from('after'), 5, 1, cb);
  for (const h of open) ops.release(null, h, cb);
  sink.emit({ type: 0x02, reason: 'test' });
  journal.close();
  fs.closeSync(fd);
  return holdFrom;
}

async function* chunksOf(b: Buffer, size: number) {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

// Exact replicas, setuid bits included (the steps make some).
const policy = { preservePrivileges: true };

test('property: a replica replaying the journal of random operations converges to the store, also when cut off and resumed; so does one bootstrapping from a snapshot taken while the operations go on', { timeout: 300_000 }, async (t) => {
  const base = tempDir(t, 'converge');
  let run = 0;
  let sessions = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(arbStep, { minLength: 1, maxLength: 60 }), fc.option(fc.nat(60), { freq: 5 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 5000 }), async (ops, snapAt, cutAt, chunk) => {
      // Most runs take a snapshot somewhere among the operations.
      const steps = snapAt === null ? ops : [...ops.slice(0, snapAt), { op: 'snapshot' as const }, ...ops.slice(snapAt)];
      const [store, whole, resumed, boot, copied] = dirs(path.join(base, String(run++)), 'store', 'whole', 'resumed', 'boot', 'copied');
      // The replicas start as copies of the store's initial state (an empty root, with its times).
      const initial = fs.statSync(store!);
      for (const r of [whole!, resumed!]) fs.utimesSync(r, initial.atime, initial.mtime);
      const file = path.join(store!, '..', 'stream');
      const holdFrom = journalRun(store!, file, steps, 'boot', copied!);
      const bytes = fs.readFileSync(file);
      await new Mirror({ replica: whole!, policy }).run(chunksOf(bytes, chunk));
      assert.equal(treeDiff(store!, whole!), '', 'a replica in sync from the start');
      const cut = Math.floor(cutAt * bytes.length);
      await new Mirror({ replica: resumed!, policy }).run(chunksOf(bytes.subarray(0, cut), chunk)).catch(() => {});
      await new Mirror({ replica: resumed!, policy }).run(chunksOf(bytes, chunk));
      assert.equal(treeDiff(store!, resumed!), '', 'a replica cut off and resumed');
      // A late replica: the header, then the stream from the session's begin frame (as a
      // broadcaster gives it), with a file in the way that the snapshot replaces; cut off once too.
      const frames = [...new FrameDecoder().push(bytes)];
      // The copy: from the frame the hold began at (what the broadcaster serves it), dropping until
      // its repair session, which brings what changed after the hold; then the live stream.
      const held = Buffer.concat([frames[0]!.bytes, ...frames.filter((f) => f.seq >= holdFrom).map((f) => f.bytes)]);
      await new Mirror({ replica: copied!, policy, bootstrap: 'hold', request: 'copy' }).run(chunksOf(held, chunk));
      assert.equal(treeDiff(store!, copied!), '', 'a replica copied from the future, then repaired');
      const begin = frames.findIndex((f) => f.type === FrameType.SNAPSHOT_BEGIN && decodeOp(f).type === FrameType.SNAPSHOT_BEGIN && (decodeOp(f) as { request?: string }).request === 'boot');
      if (begin < 0) return;
      sessions++;
      fs.writeFileSync(path.join(boot!, 'stale'), 'from before');
      const late = Buffer.concat([frames[0]!.bytes, ...frames.slice(begin).map((f) => f.bytes)]);
      const lateCut = Math.floor(cutAt * late.length);
      await new Mirror({ replica: boot!, policy, bootstrap: 'snapshot', request: 'boot' }).run(chunksOf(late.subarray(0, lateCut), chunk)).catch(() => {});
      // Resumed from its cursor if the first run adopted the session, else a new bootstrap.
      const adopted = lateCut >= frames[0]!.bytes.length + frames[begin]!.bytes.length;
      await new Mirror({ replica: boot!, policy, bootstrap: adopted ? undefined : 'snapshot', request: 'boot' }).run(chunksOf(late, chunk));
      assert.equal(treeDiff(store!, boot!), '', 'a replica bootstrapped from a snapshot taken while operations went on');
    }),
    {
      numRuns: Number(process.env['TFS_PROPERTY_RUNS'] ?? 60),
      seed: Number(process.env['TFS_TEST_SEED'] ?? 2009),
      // Files with two names while the walk has copied one: the copied name removed, or the
      // other one used, before the walk reaches it.
      examples: [1, 2, 3].flatMap((n) =>
        [{ op: 'unlink' as const, p: 'a' }, { op: 'chmod' as const, p: 'd/x', mode: 0o640 }, { op: 'link' as const, p: 'd/x', to: 'b' }, { op: 'rename' as const, p: 'd/x', to: 'e' }].map(
          (last): [Step[], number | null, number, number] => [
            [{ op: 'mkdir', p: 'd', mode: 0o755 }, { op: 'create', p: 'a', mode: 0o644 }, { op: 'release', h: 0 }, { op: 'link', p: 'a', to: 'd/x' }, { op: 'snapshot' }, { op: 'walk', n }, last],
            null,
            0.5,
            100,
          ],
        ),
      ),
    },
  );
  t.diagnostic(`${sessions} runs with a snapshot session`);
});
