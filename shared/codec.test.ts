import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameEncoder } from './encoder';
import { FrameDecoder } from './decoder';
import { ALIGN, Cap, Frame, FrameType, HEADER_SIZE, Offset } from './frame';
import { decodeOp, opMeta, OpInput } from './ops';
import { TfsError } from './errors';

function encodeAll(items: { type: FrameType; meta: unknown; data: Uint8Array }[]): Buffer {
  const enc = new FrameEncoder(0n);
  return Buffer.concat(items.map((i) => Buffer.from(enc.encode(i.type, i.meta, i.data))));
}

function decodeChunks(chunks: Uint8Array[], verify = true): Frame[] {
  const dec = new FrameDecoder({ verify });
  const out: Frame[] = [];
  for (const c of chunks) for (const f of dec.push(c)) out.push({ ...f, meta: Buffer.from(f.meta), data: Buffer.from(f.data), bytes: Buffer.from(f.bytes) });
  dec.end();
  return out;
}

const arbItem = fc.record({
  type: fc.constantFrom(FrameType.WRITE, FrameType.SETXATTR, FrameType.CREATE, FrameType.UNLINK),
  meta: fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string(), fc.integer(), fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }))),
  data: fc.uint8Array({ maxLength: 300 }),
});

test('frames round-trip: every frame is aligned, keeps its type, data, metadata and consecutive sequence numbers', () => {
  fc.assert(
    fc.property(fc.array(arbItem, { maxLength: 12 }), (items) => {
      const bytes = encodeAll(items);
      const frames = decodeChunks([bytes]);
      assert.equal(frames.length, items.length);
      frames.forEach((f, i) => {
        assert.equal(f.bytes.length % ALIGN, 0);
        assert.equal(f.type, items[i]!.type);
        assert.equal(f.seq, BigInt(i));
        assert.deepEqual(Buffer.from(f.data), Buffer.from(items[i]!.data));
      });
    }),
  );
});

test('the decoder gives the same frames fed whole, byte by byte, and split at every offset', () => {
  const items = [
    { type: FrameType.CREATE, meta: { p: 'a', x: 1 }, data: new Uint8Array() },
    { type: FrameType.WRITE, meta: { h: 1, o: 0 }, data: Buffer.from('hello world, with more than sixteen bytes') },
    { type: FrameType.WRITE, meta: { h: 1, o: 5 }, data: Buffer.alloc(0) },
    { type: FrameType.END, meta: { r: 'x' }, data: new Uint8Array() },
  ];
  const bytes = encodeAll(items);
  const whole = decodeChunks([bytes]);
  assert.equal(whole.length, 4);
  const byByte = decodeChunks([...bytes].map((b) => Uint8Array.of(b)));
  assert.deepEqual(byByte, whole);
  for (let cut = 0; cut <= bytes.length; cut++) {
    assert.deepEqual(decodeChunks([bytes.subarray(0, cut), bytes.subarray(cut)]), whole, `split at ${cut}`);
  }
});

test('property: any chunking of a stream decodes to the same frames', () => {
  fc.assert(
    fc.property(fc.array(arbItem, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 10 }), (items, cuts) => {
      const bytes = encodeAll(items);
      const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      const chunks: Uint8Array[] = [];
      let prev = 0;
      for (const p of points) {
        chunks.push(bytes.subarray(prev, p));
        prev = p;
      }
      chunks.push(bytes.subarray(prev));
      assert.deepEqual(decodeChunks(chunks), decodeChunks([bytes]));
    }),
  );
});

test('a frame inside one chunk is returned as a view, not a copy', () => {
  const bytes = encodeAll([{ type: FrameType.WRITE, meta: { h: 1, o: 0 }, data: Buffer.from('abc') }]);
  const dec = new FrameDecoder();
  const [frame] = [...dec.push(bytes)];
  assert.equal(frame!.bytes.buffer, bytes.buffer);
});

test('every corrupted byte is caught: checksum, length, reserved bits or padding', () => {
  const bytes = encodeAll([{ type: FrameType.SETXATTR, meta: { p: 'f', n: 'user.a', fl: 0 }, data: Buffer.from('value!') }]);
  for (let i = 0; i < bytes.length; i++) {
    const bad = Buffer.from(bytes);
    bad[i] ^= 0x40;
    assert.throws(() => decodeChunks([bad]), (err: unknown) => err instanceof TfsError && /CORRUPT|TOO_LARGE|TRUNCATED/.test(err.code), `flip at byte ${i}`);
  }
});

test('truncated input is reported, with the byte offset', () => {
  const bytes = encodeAll([{ type: FrameType.UNLINK, meta: { p: 'x' }, data: new Uint8Array() }]);
  for (const cut of [1, 15, 16, 17, bytes.length - 1]) {
    assert.throws(() => decodeChunks([bytes.subarray(0, cut)]), (err: unknown) => err instanceof TfsError && err.code === 'TFS_TRUNCATED' && /at byte 0/.test(err.message));
  }
});

test('lengths above the cap are refused before anything is allocated', () => {
  const head = Buffer.alloc(HEADER_SIZE);
  head.writeUInt32LE(Cap.FRAME + ALIGN, Offset.LENGTH);
  assert.throws(() => decodeChunks([head]), (err: unknown) => err instanceof TfsError && err.code === 'TFS_FRAME_TOO_LARGE');
  const small = new FrameDecoder({ maxFrame: 64 });
  head.writeUInt32LE(128, Offset.LENGTH);
  assert.throws(() => [...small.push(head)], (err: unknown) => err instanceof TfsError && err.code === 'TFS_FRAME_TOO_LARGE');
  head.writeUInt32LE(40, Offset.LENGTH);
  assert.throws(() => decodeChunks([head]), (err: unknown) => err instanceof TfsError && err.code === 'TFS_CORRUPT_FRAME');
});

test('metadata or data that does not fit the declared length is refused', () => {
  const bytes = encodeAll([{ type: FrameType.WRITE, meta: { h: 1, o: 0 }, data: Buffer.from('abc') }]);
  const bad = Buffer.from(bytes);
  bad.writeUInt32LE(1000, Offset.DATA_LENGTH);
  assert.throws(() => decodeChunks([bad], false), (err: unknown) => err instanceof TfsError && err.code === 'TFS_CORRUPT_FRAME');
});

test('the encoder refuses metadata above its cap', () => {
  assert.throws(() => new FrameEncoder().encode(FrameType.CREATE, { p: 'x'.repeat(70000) }), (err: unknown) => err instanceof TfsError && err.code === 'TFS_FRAME_TOO_LARGE');
});

const arbTimes = fc.tuple(fc.bigInt({ min: 0n, max: (1n << 62n) }), fc.bigInt({ min: 0n, max: (1n << 62n) }));
const arbName = fc.stringMatching(/^[^/\0]{1,20}$/).filter((s) => s !== '.' && s !== '..');
const arbPath = fc.array(arbName, { minLength: 1, maxLength: 4 }).map((p) => p.join('/'));

test('property: ops round-trip through the op table', () => {
  const arbOp: fc.Arbitrary<OpInput> = fc.oneof(
    fc.record({ type: fc.constant(FrameType.CREATE), path: arbPath, mode: fc.nat(0o177777), uid: fc.nat(), gid: fc.nat(), times: arbTimes, parentTimes: arbTimes }),
    fc.record({ type: fc.constant(FrameType.RENAME), from: arbPath, path: arbPath, flags: fc.constant(0), times: arbTimes, fromParentTimes: arbTimes, parentTimes: arbTimes }),
    fc.record({ type: fc.constant(FrameType.OPEN), handle: fc.nat(), path: arbPath, caller: fc.record({ pid: fc.nat(), uid: fc.nat(), gid: fc.nat() }) }),
    fc.record({ type: fc.constant(FrameType.UTIMENS), path: arbPath, times: arbTimes }),
    fc.record({ type: fc.constant(FrameType.SYMLINK), path: arbPath, target: fc.string(), uid: fc.nat(), gid: fc.nat(), times: arbTimes, parentTimes: arbTimes }),
  ) as fc.Arbitrary<OpInput>;
  fc.assert(
    fc.property(arbOp, (op) => {
      const enc = new FrameEncoder(7n);
      const [frame] = [...new FrameDecoder().push(Buffer.from(enc.encode(op.type, opMeta(op))))];
      assert.deepEqual(decodeOp(frame!), { ...op, seq: 7n });
    }),
  );
});

test('decodeOp names the frame and field that is wrong', () => {
  const enc = new FrameEncoder(5n);
  const frameOf = (type: FrameType, meta: unknown, data?: Uint8Array) => [...new FrameDecoder().push(Buffer.from(enc.encode(type, meta, data)))][0]!;
  assert.throws(() => decodeOp(frameOf(FrameType.UNLINK, { pt: [1n, 2n] })), /frame #5: UNLINK: field 'p' \(path\) is missing/);
  assert.throws(() => decodeOp(frameOf(FrameType.UNLINK, { p: 5, pt: [1n, 2n] })), /is not a string/);
  assert.throws(() => decodeOp(frameOf(FrameType.UNLINK, { p: '../x', pt: [1n, 2n] })), (e: unknown) => e instanceof TfsError && e.code === 'TFS_HOSTILE_PATH');
  assert.throws(() => decodeOp(frameOf(FrameType.UNLINK, { p: 'x', pt: [1n, 2n] }, Buffer.from('zz'))), /takes none/);
  assert.throws(() => decodeOp(frameOf(0x7f as FrameType, {})), /unknown frame type 0x7f/);
  assert.throws(() => decodeOp(frameOf(FrameType.OPEN, [1, 2])), /not a map/);
});

test("the root itself ('') may only have its attributes changed, never be removed, renamed, created or written", () => {
  const enc = new FrameEncoder(9n);
  const decode = (type: FrameType, meta: unknown, data?: Uint8Array) => decodeOp([...new FrameDecoder().push(Buffer.from(enc.encode(type, meta, data)))][0]!);
  const T = [1n, 2n];
  const hostile = (e: unknown) => e instanceof TfsError && e.code === 'TFS_HOSTILE_PATH' && /names the tree's root itself/.test(e.message);
  assert.throws(() => decode(FrameType.RMDIR, { p: '', pt: T }), hostile);
  assert.throws(() => decode(FrameType.UNLINK, { p: '', pt: T }), hostile);
  assert.throws(() => decode(FrameType.RENAME, { from: '', p: 'x', fl: 0, t: T, fpt: T, pt: T }), hostile);
  assert.throws(() => decode(FrameType.RENAME, { from: 'x', p: '', fl: 0, t: T, fpt: T, pt: T }), hostile);
  assert.throws(() => decode(FrameType.LINK, { from: '', p: 'x', pt: T }), hostile);
  assert.throws(() => decode(FrameType.MKDIR, { p: '', m: 0o40755, u: 0, g: 0, t: T, pt: T }), hostile);
  assert.throws(() => decode(FrameType.OPEN, { h: 1, p: '' }), hostile);
  assert.throws(() => decode(FrameType.TRUNCATE, { p: '', s: 0, t: T }), hostile);
  for (const [type, meta] of [
    [FrameType.CHMOD, { p: '', m: 0o40755 }],
    [FrameType.CHOWN, { p: '', u: 1, g: 1, m: 0o40755 }],
    [FrameType.UTIMENS, { p: '', t: T }],
    [FrameType.REMOVEXATTR, { p: '', n: 'user.x' }],
  ] as const) {
    assert.equal((decode(type, meta) as { path: string }).path, '');
  }
  assert.equal((decode(FrameType.SETXATTR, { p: '', n: 'user.x', fl: 0 }, Buffer.from('v')) as { path: string }).path, '');
});
