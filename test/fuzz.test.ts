import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { contiguousChecksum } from '../shared/checksum';
import { FrameDecoder } from '../shared/decoder';
import { FrameEncoder } from '../shared/encoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, Offset } from '../shared/frame';
import { unpackMeta } from '../shared/meta';
import { Times } from '../shared/ops';
import { StreamBuilder } from '../shared/stream-builder';
import { Mirror } from '../mirror/mirror';
import { rng, tempDir } from './harness';

/**
 * Fuzzing of what a mirror reads from the network: the decoder and the replay engine, fed
 * mutations of a stream that uses every kind of frame. Bounded in time (TFS_FUZZ_SECONDS, default
 * 15), seeded (TFS_FUZZ_SEED, default 2009, or "random"; printed). Each input must end in success or in a TfsError with a
 * known code and a message; nothing outside the replica may change.
 */
const seconds = Number(process.env['TFS_FUZZ_SECONDS'] ?? 15);
// A fixed seed by default, so that a run can be repeated; TFS_FUZZ_SEED=random explores.
const seedEnv = process.env['TFS_FUZZ_SEED'] ?? '2009';
const seed = seedEnv === 'random' ? Date.now() % 1_000_000 : Number(seedEnv);


const T: Times = [1_700_000_000_000_000_000n, 1_700_000_000_100_000_000n];

/** A stream with every kind of operation frame, as a journal writes them. */
function baseStream(): Buffer[] {
  const c = { uid: 0, gid: 0, times: T, parentTimes: T };
  return new StreamBuilder('fuzz')
    .add({ type: FrameType.MKDIR, path: 'd', mode: 0o40755, ...c })
    .add({ type: FrameType.CREATE, path: 'd/f', mode: 0o100644, ...c })
    .add({ type: FrameType.OPEN, handle: 1, path: 'd/f' })
    .add({ type: FrameType.WRITE, handle: 1, offset: 0 }, Buffer.from('hello world'))
    .add({ type: FrameType.FTRUNCATE, handle: 1, size: 5, times: T })
    .add({ type: FrameType.FALLOCATE, handle: 1, flags: 1, offset: 0, length: 4096, times: T })
    .add({ type: FrameType.FSYNC, handle: 1, datasync: false, times: T })
    .add({ type: FrameType.SETXATTR, path: 'd/f', name: 'user.k', flags: 0 }, Buffer.from('v'))
    .add({ type: FrameType.REMOVEXATTR, path: 'd/f', name: 'user.k' })
    .add({ type: FrameType.LINK, path: 'd/g', from: 'd/f', parentTimes: T })
    .add({ type: FrameType.RENAME, from: 'd/g', path: 'h', flags: 0, times: T, fromParentTimes: T, parentTimes: T })
    .add({ type: FrameType.WRITE, handle: 1, offset: 5 }, Buffer.from('!'))
    .add({ type: FrameType.RELEASE, handle: 1, times: T })
    .add({ type: FrameType.SYMLINK, path: 's', target: 'd/f', ...c })
    .add({ type: FrameType.MKNOD, path: 'fifo', mode: 0o10644, rdev: 0, ...c })
    .add({ type: FrameType.CHMOD, path: 'h', mode: 0o100600 })
    .add({ type: FrameType.CHOWN, path: 'h', uid: 1, gid: 1, mode: 0o100600 })
    .add({ type: FrameType.UTIMENS, path: 'd', times: T })
    .add({ type: FrameType.TRUNCATE, path: 'h', size: 3, times: T })
    .add({ type: FrameType.UNLINK, path: 'h', parentTimes: T })
    .add({ type: FrameType.SNAPSHOT_BEGIN, id: 1, full: true })
    .add({ type: FrameType.PURGE, path: 'd', session: 1 })
    .add({ type: FrameType.SNAPSHOT_END, id: 1, nameless: [7] })
    .add({ type: FrameType.RMDIR, path: 'd', parentTimes: T })
    .end().list;
}

/** Values a hostile broadcaster would put in a field. */
const HOSTILE: unknown[] = [
  '..', '../x', '/etc/passwd', 'a/../../b', '', '.', 'a//b', 'a\0b', 'x'.repeat(5000), `${'y'.repeat(255)}/`, 'd/f/..',
  -1, 0, 2 ** 31, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER, 2 ** 64, -(2 ** 63), 1.5, NaN, Infinity, 18446744073709551615n, -1n,
  true, null, [], [1], [1, 2, 3], [-1n, 2n], { a: 1 }, Buffer.alloc(3), 'user.' + 'k'.repeat(300), 0o170777, 0o20666, 0o104755,
];

/** Sets a frame's checksum from its contents (so a mutation gets past it and reaches the parser). */
function reseal(frame: Buffer): Buffer {
  if (frame.length < 32) return frame;
  const metaLength = frame.readUInt16LE(Offset.META_LENGTH);
  const dataLength = frame.readUInt32LE(Offset.DATA_LENGTH);
  if (32 + metaLength + dataLength > frame.length) return frame;
  frame.writeUInt32LE(contiguousChecksum(frame, metaLength, dataLength), Offset.CHECKSUM);
  return frame;
}

/** One mutation of the stream. */
function mutate(frames: Buffer[], pick: (n: number) => number): { bytes: Buffer; what: string } {
  const out: Buffer[] = frames.map((f) => Buffer.from(f));
  const i = 1 + pick(out.length - 1);
  const f = out[i]!;
  switch (pick(7)) {
    case 0: {
      const at = pick(f.length);
      f[at] = pick(256);
      return { bytes: Buffer.concat(out), what: `byte ${at} of frame ${i} set` };
    }
    case 1: {
      const at = pick(Math.min(f.length, 32));
      f[at] = pick(256);
      reseal(f);
      return { bytes: Buffer.concat(out), what: `header byte ${at} of frame ${i} set, checksum resealed` };
    }
    case 2: {
      // A field of the metadata replaced by a hostile value, re-encoded as a valid frame.
      const [frame] = [...new FrameDecoder().push(f)];
      const meta = unpackMeta(frame!.meta) as Record<string, unknown>;
      const keys = Object.keys(meta);
      const key = pick(3) === 0 ? `x${pick(5)}` : keys[pick(keys.length)]!;
      meta[key] = HOSTILE[pick(HOSTILE.length)];
      let encoded: Buffer;
      try {
        encoded = Buffer.from(new FrameEncoder(frame!.seq).encode(frame!.type as FrameType, meta, frame!.data));
      } catch {
        return { bytes: Buffer.concat(out), what: 'unencodable mutation skipped' };
      }
      out[i] = encoded;
      return { bytes: Buffer.concat(out), what: `frame ${i} field ${key} = ${String(meta[key]).slice(0, 40)}` };
    }
    case 3: {
      f[Offset.TYPE] = pick(64);
      reseal(f);
      return { bytes: Buffer.concat(out), what: `frame ${i} type set to 0x${f[Offset.TYPE]!.toString(16)}` };
    }
    case 4:
      out.splice(i, 1);
      return { bytes: Buffer.concat(out), what: `frame ${i} dropped` };
    case 5: {
      const j = 1 + pick(out.length - 1);
      const tmp = out[i]!;
      out[i] = out[j]!;
      out[j] = tmp;
      return { bytes: Buffer.concat(out), what: `frames ${i} and ${j} swapped` };
    }
    default: {
      const all = Buffer.concat(out);
      const at = pick(all.length);
      return { bytes: all.subarray(0, at), what: `cut at byte ${at}` };
    }
  }
}

function digest(root: string): string {
  const h = createHash('sha256');
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const st = fs.lstatSync(path.join(root, rel, name));
      h.update(`${rel}/${name} ${st.mode} ${st.size}\n`);
      if (st.isFile()) h.update(fs.readFileSync(path.join(root, rel, name)));
      if (st.isDirectory()) walk(path.join(rel, name));
    }
  };
  walk('');
  return h.digest('hex');
}

async function* split(b: Buffer, pick: (n: number) => number) {
  for (let at = 0; at < b.length; ) {
    const n = 1 + pick(300);
    yield b.subarray(at, at + n);
    at += n;
  }
}

test(`fuzz: mutated streams into the decoder and the replay engine, for ${seconds} s (seed ${seed}): success or a named TfsError, nothing outside the replica`, { timeout: (seconds + 120) * 1000 }, async (t) => {
  const base = tempDir(t, 'fuzz');
  const canary = path.join(base, 'canary');
  fs.mkdirSync(path.join(canary, 'd'), { recursive: true });
  fs.writeFileSync(path.join(canary, 'd', 'f'), 'precious');
  fs.writeFileSync(path.join(canary, 'h'), 'precious too');
  const before = digest(canary);
  const frames = baseStream();
  const pick = rng(seed);
  const codes = new Set<string>(Object.values(ErrorCode));
  const seen = new Map<string, number>();
  const until = Date.now() + seconds * 1000;
  let runs = 0;
  while (Date.now() < until) {
    const { bytes, what } = mutate(frames, pick);
    const replica = path.join(base, 'work', 'replica');
    fs.rmSync(path.join(base, 'work'), { recursive: true, force: true });
    fs.mkdirSync(replica, { recursive: true });
    try {
      await new Mirror({ replica, log: () => {} }).run(split(bytes, pick));
      seen.set('ok', (seen.get('ok') ?? 0) + 1);
    } catch (err) {
      const ok = err instanceof TfsError && codes.has(err.code) && err.message.length > 0;
      assert.ok(ok, `seed ${seed}, run ${runs} (${what}): not a named refusal: ${(err as Error).stack}`);
      seen.set((err as TfsError).code, (seen.get((err as TfsError).code) ?? 0) + 1);
    }
    assert.equal(digest(canary), before, `seed ${seed}, run ${runs} (${what}): the canary changed`);
    const beside = fs.readdirSync(path.join(base, 'work')).filter((n) => !/^(replica|\.replica\.tfs-mirror\.db(-wal|-shm)?)$/.test(n));
    assert.deepEqual(beside, [], `seed ${seed}, run ${runs} (${what}): something was made beside the replica`);
    runs++;
  }
  t.diagnostic(`seed ${seed}: ${runs} mutated streams; outcomes ${[...seen].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  assert.ok(runs > 50, 'the fuzzer ran');
});
