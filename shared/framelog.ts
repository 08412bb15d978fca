import fs from 'node:fs';
import path from 'node:path';
import { FrameDecoder } from './decoder';
import { ErrorCode, TfsError } from './errors';
import { Frame, FrameType, Offset } from './frame';
import { decodeOp } from './ops';
import { posix } from './posix';

/**
 * A segmented on-disk frame log: one stream's frames, exactly as they travel, kept in DIR so that
 * any reader can be served from any retained sequence number while a writer keeps appending, in
 * this process or another one.
 *
 *   DIR/header                 the stream header frame (seq 0), written once
 *   DIR/<first seq>.seg        frames, concatenated, first seq in the name (20 digits)
 *   DIR/<first seq>.idx        per frame of the segment, in order: the u64 end offset of the frame
 *   DIR/lock                   flock'ed by the one writer
 *
 * Order of writes: a frame's bytes go to the segment, then its end offset to the index. A reader
 * trusts only index entries, so it never sees a frame that is not whole; an end offset is never
 * 0 (a frame is at least 32 bytes), so an entry not yet written reads as 0 and is not trusted.
 *
 * Crash safety: the segment is the truth. On open, the writer decodes the last segment with its
 * checksums, cuts back whatever follows the last whole, valid frame (a torn or corrupt tail),
 * rewrites that segment's index from what it found, and says so. Earlier segments are checked
 * when read: a reader meeting a bad checksum stops with TFS_CORRUPT_FRAME naming the segment.
 *
 * Durability follows the sync policy: `always` syncs after every append; `fsync` (the default)
 * when the stream carries a program's fsync (an FSYNC frame) or its end, and at least every
 * `syncIntervalMs`; `never` leaves it to the kernel. A power cut can cost what was not synced.
 */

export const SyncPolicy = {
  ALWAYS: 'always',
  FSYNC: 'fsync',
  NEVER: 'never',
} as const;
export type SyncPolicy = (typeof SyncPolicy)[keyof typeof SyncPolicy];

export interface FrameLogOptions {
  /** A segment is closed once it holds this many bytes (default 64 MiB). */
  segmentBytes?: number;
  sync?: SyncPolicy;
  /** With `fsync`: the longest a frame stays unsynced (default 1000 ms). */
  syncIntervalMs?: number;
  log?: (message: string) => void;
}

/** How much of the log to keep: the oldest segments go first, never the one being appended to. */
export interface Retention {
  maxBytes?: number;
  maxAgeMs?: number;
  /** Whatever the other bounds say, keep every segment that holds this frame or a later one. */
  keepFrom?: bigint;
}

/** Frames removed by a trim. */
export interface Trimmed {
  fromSeq: bigint;
  toSeq: bigint;
  bytes: number;
}

const SEGMENT_DIGITS = 20;
const ENTRY = 8;
const DEFAULT_SEGMENT = 64 * 1024 * 1024;

interface Segment {
  first: bigint;
  seg: string;
  idx: string;
}

/** A segment size that lets a log bounded to `maxBytes` trim in steps of about a sixteenth of it. */
export function segmentBytesFor(maxBytes: number | undefined): number {
  if (maxBytes === undefined) return DEFAULT_SEGMENT;
  return Math.max(64 * 1024, Math.min(DEFAULT_SEGMENT, Math.floor(maxBytes / 16)));
}

function segmentName(first: bigint): string {
  return first.toString().padStart(SEGMENT_DIGITS, '0');
}

/** The segments in DIR, oldest first. */
function listSegments(dir: string): Segment[] {
  const out: Segment[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = /^(\d{20})\.seg$/.exec(name);
    if (m) out.push({ first: BigInt(m[1]!), seg: path.join(dir, name), idx: path.join(dir, `${m[1]}.idx`) });
  }
  return out.sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
}

function readHeader(dir: string): Uint8Array | null {
  try {
    const bytes = fs.readFileSync(path.join(dir, 'header'));
    const frames = [...new FrameDecoder().push(bytes)];
    if (frames.length !== 1 || frames[0]!.type !== FrameType.STREAM_HEADER) throw new Error('not one stream header frame');
    return bytes;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame log ${dir}: its header file is damaged: ${(err as Error).message}`, { cause: err });
  }
}

/** Committed end offsets of a segment's frames (an unwritten or torn entry ends the list). */
function readIndex(idx: string): BigUint64Array {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(idx);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new BigUint64Array(0);
    throw err;
  }
  const n = Math.floor(bytes.length / ENTRY);
  const entries = new BigUint64Array(n);
  for (let i = 0; i < n; i++) {
    const end = bytes.readBigUInt64LE(i * ENTRY);
    if (end === 0n) return entries.subarray(0, i);
    entries[i] = end;
  }
  return entries;
}

function stat(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** The stream id in a stream header frame. */
function streamIdOf(header: Uint8Array | null): string | null {
  if (header === null) return null;
  const op = decodeOp([...new FrameDecoder().push(header)][0]!);
  return op.type === FrameType.STREAM_HEADER ? op.streamId : null;
}

/**
 * Reading side of a frame log: any number of readers, in any process, while a writer appends.
 * Readers learn of new segments and frames by looking again (`refresh`).
 */
export class FrameLog {
  protected segments: Segment[] = [];
  protected header_: Uint8Array | null;
  /** Entries in the last segment's index, as last looked at. */
  private tailCount = 0;

  protected constructor(readonly dir: string) {
    this.header_ = readHeader(dir);
    this.segments = listSegments(dir);
  }

  /** Opens DIR for reading (another process may be writing it). */
  static openReader(dir: string): FrameLog {
    if (!stat(dir)?.isDirectory()) throw new TfsError(ErrorCode.STATE, `frame log ${dir}: no such directory`);
    const log = new FrameLog(dir);
    log.refresh();
    return log;
  }

  /** The stream header frame, once the stream has one. */
  get header(): Uint8Array | null {
    return this.header_;
  }

  get streamId(): string | null {
    return streamIdOf(this.header_);
  }

  /** The oldest retained frame (lastSeq + 1 when the log holds none). */
  get firstSeq(): bigint {
    return this.segments.length > 0 ? this.segments[0]!.first : this.lastSeq + 1n;
  }

  /** The last frame appended (0n before any; as of the last refresh for a reader). */
  get lastSeq(): bigint {
    const last = this.segments.at(-1);
    return last === undefined ? 0n : last.first + BigInt(this.tailCount) - 1n;
  }

  /** Bytes held in segments. */
  get bytes(): number {
    let n = 0;
    for (const s of this.segments) n += stat(s.seg)?.size ?? 0;
    return n;
  }

  /** Looks again at DIR for a header, new segments and new frames (what another process appended). */
  refresh(): void {
    this.header_ ??= readHeader(this.dir);
    this.segments = listSegments(this.dir);
    const last = this.segments.at(-1);
    this.tailCount = last ? Math.floor((stat(last.idx)?.size ?? 0) / ENTRY) : 0;
  }

  /** A cursor that reads frames from `fromSeq` on. */
  cursor(fromSeq: bigint): LogCursor {
    return new LogCursor(this, fromSeq);
  }

  /** The segment holding `seq`, or undefined when it is older than the log or not yet appended. */
  segmentOf(seq: bigint): Segment | undefined {
    let found: Segment | undefined;
    for (const s of this.segments) {
      if (s.first > seq) break;
      found = s;
    }
    return found;
  }

  /** Releases what the log holds open (a writer also its lock). */
  close(): void {
    // A reader holds nothing open: its cursors do.
  }

  /** The segment after `s`, if any. */
  nextSegment(s: Segment): Segment | undefined {
    const i = this.segments.findIndex((x) => x.first === s.first);
    return i >= 0 ? this.segments[i + 1] : undefined;
  }
}

/**
 * Reads frames in order from one position. Whole frames only (as the index commits them), checked
 * against their checksums and sequence numbers. Not thread of its own: `read` returns what is
 * there now, `[]` when caught up; call `log.refresh()` (or let the writer's append tell you) and
 * read again.
 */
export class LogCursor {
  private segment: Segment | undefined;
  private fd = -1;
  private idxFd = -1;
  /** End offsets of the current segment's frames, as far as read. */
  private index = new BigUint64Array(1024);
  private indexLength = 0;

  constructor(
    private readonly log: FrameLog,
    /** The next frame this cursor returns. */
    public next: bigint,
  ) {}

  /**
   * Frames from `next` on, about `maxBytes` of them (at least one when there is one). Throws
   * TFS_HISTORY_GONE when `next` is older than what the log retains.
   */
  read(maxBytes = 1 << 20): Frame[] {
    if (!this.locate()) return [];
    const s = this.segment!;
    const i = Number(this.next - s.first);
    if (i >= this.indexLength && (this.loadIndex(), i >= this.indexLength)) {
      // Caught up with this segment: the writer may have moved on to the next one. Or the cursor
      // was placed from a listing older than `next` (segmentOf gave the last segment it knew):
      // once a later segment begins at or before `next`, it is sought again.
      const after = this.log.nextSegment(s);
      if (after === undefined || after.first > this.next) return [];
      this.close();
      return this.read(maxBytes);
    }
    const start = i === 0 ? 0 : Number(this.index[i - 1]!);
    let j = i + 1;
    while (j < this.indexLength && Number(this.index[j]!) - start <= maxBytes) j++;
    const end = Number(this.index[j - 1]!);
    const buf = Buffer.allocUnsafe(end - start);
    let got = 0;
    while (got < buf.length) {
      const n = fs.readSync(this.fd, buf, got, buf.length - got, start + got);
      if (n === 0) throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame log ${s.seg}: the index promises ${end} bytes, the segment ends at ${start + got}`);
      got += n;
    }
    let frames: Frame[];
    try {
      frames = [...new FrameDecoder().push(buf)];
    } catch (err) {
      throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame log ${s.seg}, bytes ${start}..${end}: ${(err as Error).message}`, { cause: err });
    }
    for (const f of frames) {
      if (f.seq !== this.next) throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame log ${s.seg}: frame #${f.seq} where #${this.next} belongs`);
      this.next++;
    }
    return frames;
  }

  /** Reads the index entries written since the last look (an entry not yet written reads as 0). */
  private loadIndex(): void {
    const have = this.indexLength * ENTRY;
    const size = fs.fstatSync(this.idxFd).size;
    const more = Math.floor(size / ENTRY) - this.indexLength;
    if (more <= 0) return;
    if (this.indexLength + more > this.index.length) {
      const grown = new BigUint64Array(Math.max(this.index.length * 2, this.indexLength + more));
      grown.set(this.index.subarray(0, this.indexLength));
      this.index = grown;
    }
    const bytes = Buffer.allocUnsafe(more * ENTRY);
    const n = fs.readSync(this.idxFd, bytes, 0, bytes.length, have);
    for (let k = 0; k < Math.floor(n / ENTRY); k++) {
      const end = bytes.readBigUInt64LE(k * ENTRY);
      if (end === 0n) break;
      this.index[this.indexLength++] = end;
    }
  }

  /** Finds and opens the segment holding `next`; false when it is not appended yet. */
  private locate(): boolean {
    if (this.segment && this.next >= this.segment.first && this.fd >= 0) return true;
    this.close();
    const s = this.log.segmentOf(this.next);
    if (s === undefined) {
      if (this.next < this.log.firstSeq) throw historyGone(this.log, this.next);
      return false;
    }
    try {
      this.fd = fs.openSync(s.seg, 'r');
      this.idxFd = fs.openSync(s.idx, 'r');
    } catch (err) {
      this.close();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        // Being created (its index follows the segment file), or trimmed since the listing.
        if (fs.existsSync(s.seg) && this.log.nextSegment(s) === undefined) return false;
        throw historyGone(this.log, this.next);
      }
      throw err;
    }
    this.segment = s;
    this.indexLength = 0;
    return true;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    if (this.idxFd >= 0) fs.closeSync(this.idxFd);
    this.fd = this.idxFd = -1;
    this.segment = undefined;
  }
}

function historyGone(log: FrameLog, seq: bigint): TfsError {
  return new TfsError(ErrorCode.HISTORY_GONE, `frame #${seq} is no longer retained in ${log.dir} (it keeps #${log.firstSeq} to #${log.lastSeq})`, {
    hint: 'The replica is too far behind to catch up from this log: bootstrap it again.',
  });
}

/** The writing side: one per log (an exclusive lock on DIR/lock), appending frames with consecutive numbers. */
export class FrameLogWriter extends FrameLog {
  private readonly segmentBytes: number;
  private readonly sync: SyncPolicy;
  private readonly say: (m: string) => void;
  private segFd = -1;
  private idxFd = -1;
  /** Bytes in the segment being appended to. */
  private segSize = 0;
  private last = 0n;
  private readonly entry = Buffer.alloc(ENTRY);
  private dirty = false;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<() => void>();

  private constructor(
    dir: string,
    private readonly lockFd: number,
    options: FrameLogOptions,
  ) {
    super(dir);
    fs.ftruncateSync(lockFd, 0);
    fs.writeSync(lockFd, `${process.pid}\n`, 0);
    this.segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT;
    this.sync = options.sync ?? SyncPolicy.FSYNC;
    this.say = options.log ?? (() => {});
    this.recover();
    if (this.sync === SyncPolicy.FSYNC) {
      this.timer = setInterval(() => this.flush(), options.syncIntervalMs ?? 1000);
      this.timer.unref();
    }
  }

  /** Opens (or creates) DIR for appending; refuses when another process writes it. */
  static open(dir: string, options: FrameLogOptions = {}): FrameLogWriter {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const lockFd = fs.openSync(path.join(dir, 'lock'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    if (!posix.tryLock(lockFd)) {
      fs.closeSync(lockFd);
      const holder = fs.readFileSync(path.join(dir, 'lock'), 'utf8').trim();
      throw new TfsError(ErrorCode.STATE, `frame log ${dir} is being written by another process${holder ? ` (pid ${holder})` : ''}`);
    }
    return new FrameLogWriter(dir, lockFd, options);
  }

  /** Whether a writer holds DIR now (in any process). */
  static isWritten(dir: string): boolean {
    let fd: number;
    try {
      fd = fs.openSync(path.join(dir, 'lock'), fs.constants.O_RDWR);
    } catch {
      return false;
    }
    try {
      return !posix.tryLock(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  override get lastSeq(): bigint {
    return this.last;
  }

  override refresh(): void {
    // The writer's view is always current.
  }

  /** Records the stream header (once; a log holds one stream). */
  setHeader(frame: Uint8Array): void {
    if (this.header_ !== null) {
      if (Buffer.compare(Buffer.from(this.header_), Buffer.from(frame)) !== 0) throw new TfsError(ErrorCode.STREAM_MISMATCH, `frame log ${this.dir} holds stream ${this.streamId}, not ${streamIdOf(frame)}`);
      return;
    }
    const tmp = path.join(this.dir, 'header.tmp');
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    try {
      fs.writeSync(fd, frame);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path.join(this.dir, 'header'));
    this.syncDir();
    this.header_ = Buffer.from(frame);
  }

  /**
   * Appends one whole frame, given as the parts it was encoded in (written with one writev, never
   * copied; the first part holds at least its routing header). Its sequence number must follow
   * the last one. A failed write (a full disk) is cut back, so the log never holds part of a
   * frame, and rethrown.
   */
  append(parts: readonly Uint8Array[]): void {
    const head = Buffer.from(parts[0]!.buffer, parts[0]!.byteOffset, parts[0]!.length);
    const seq = head.readBigUInt64LE(Offset.SEQ);
    const type = head[Offset.TYPE]!;
    if (this.last !== 0n && seq !== this.last + 1n) throw new TfsError(ErrorCode.SEQUENCE_GAP, `frame log ${this.dir}: frame #${seq} appended after #${this.last}`);
    let length = 0;
    for (const p of parts) length += p.length;
    if (this.segFd < 0 || (this.segSize > 0 && this.segSize + length > this.segmentBytes)) this.roll(seq);
    const start = this.segSize;
    try {
      let done = 0;
      let pending = parts as Uint8Array[];
      while (done < length) {
        const n = fs.writevSync(this.segFd, pending, start + done);
        done += n;
        pending = skip(pending, n);
      }
      this.entry.writeBigUInt64LE(BigInt(start + length));
      fs.writeSync(this.idxFd, this.entry, 0, ENTRY, Number(seq - this.segments.at(-1)!.first) * ENTRY);
    } catch (err) {
      // Never leave part of a frame (or an index entry for it) behind.
      try {
        fs.ftruncateSync(this.segFd, start);
        fs.ftruncateSync(this.idxFd, Number(seq - this.segments.at(-1)!.first) * ENTRY);
      } catch {
        // the next open cuts the tail back
      }
      throw new TfsError(ErrorCode.STATE, `frame log ${this.dir}: cannot append frame #${seq}: ${(err as Error).message}`, { cause: err });
    }
    this.segSize = start + length;
    this.last = seq;
    this.dirty = true;
    if (this.sync === SyncPolicy.ALWAYS || (this.sync === SyncPolicy.FSYNC && (type === FrameType.FSYNC || type === FrameType.END))) this.flush();
    for (const l of this.listeners) l();
  }

  /** Calls `listener` after every append (readers in this process). Returns the unsubscriber. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Lends the segment being appended to, so that another writer in this process (the journal's
   * native write path) appends frames to it directly: its descriptors, first sequence number,
   * size, and the last sequence number so far. None (null) before the first segment. Until
   * `takeBack`, only that writer may append; `takeBack` must come before any other call.
   */
  lend(): { segFd: number; idxFd: number; first: bigint; size: number; last: bigint; limit: number } | null {
    if (this.segFd < 0) return null;
    return { segFd: this.segFd, idxFd: this.idxFd, first: this.segments.at(-1)!.first, size: this.segSize, last: this.last, limit: this.segmentBytes };
  }

  /** Takes the lent segment back, as the other writer left it (its size and last frame). */
  takeBack(size: number, last: bigint): void {
    if (last === this.last) return;
    this.segSize = size;
    this.last = last;
    this.dirty = true;
    for (const l of this.listeners) l();
  }

  /** Makes everything appended so far durable. */
  flush(): void {
    if (!this.dirty || this.segFd < 0) return;
    fs.fdatasyncSync(this.segFd);
    fs.fdatasyncSync(this.idxFd);
    this.dirty = false;
  }

  /** Removes the oldest segments beyond the retention (never the one being appended to). */
  trim(retention: Retention): Trimmed | null {
    const now = Date.now();
    let total = this.bytes;
    let from: bigint | undefined;
    let bytes = 0;
    while (this.segments.length > 1) {
      const oldest = this.segments[0]!;
      if (retention.keepFrom !== undefined && this.segments[1]!.first > retention.keepFrom) break;
      const st = stat(oldest.idx);
      const size = stat(oldest.seg)?.size ?? 0;
      const tooBig = retention.maxBytes !== undefined && total > retention.maxBytes;
      const tooOld = retention.maxAgeMs !== undefined && st !== null && now - st.mtimeMs > retention.maxAgeMs;
      if (!tooBig && !tooOld) break;
      fs.rmSync(oldest.seg, { force: true });
      fs.rmSync(oldest.idx, { force: true });
      this.segments.shift();
      total -= size;
      bytes += size;
      from ??= oldest.first;
    }
    return from === undefined ? null : { fromSeq: from, toSeq: this.segments[0]!.first - 1n, bytes };
  }

  /** Time of the last append, in ns since the epoch (the index's modification time). */
  lastAppendNs(): bigint | null {
    const last = this.segments.at(-1);
    if (!last) return null;
    return fs.statSync(last.idx, { bigint: true }).mtimeNs;
  }

  override close(): void {
    clearInterval(this.timer);
    this.flush();
    if (this.segFd >= 0) fs.closeSync(this.segFd);
    if (this.idxFd >= 0) fs.closeSync(this.idxFd);
    this.segFd = this.idxFd = -1;
    fs.closeSync(this.lockFd);
  }

  /** Starts a new segment whose first frame is `seq`. */
  private roll(seq: bigint): void {
    this.flush();
    if (this.segFd >= 0) fs.closeSync(this.segFd);
    if (this.idxFd >= 0) fs.closeSync(this.idxFd);
    const name = segmentName(seq);
    const s: Segment = { first: seq, seg: path.join(this.dir, `${name}.seg`), idx: path.join(this.dir, `${name}.idx`) };
    this.segFd = fs.openSync(s.seg, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    this.idxFd = fs.openSync(s.idx, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    this.segments.push(s);
    this.segSize = 0;
    this.syncDir();
  }

  private syncDir(): void {
    if (this.sync === SyncPolicy.NEVER) return;
    const fd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Checks the segments' numbering, and makes the last one whole: its frames are decoded with
   * their checksums, whatever follows the last good one is cut off, and its index is rewritten.
   */
  private recover(): void {
    const segs = this.segments;
    for (let i = 0; i + 1 < segs.length; i++) {
      const count = readIndex(segs[i]!.idx).length;
      if (segs[i]!.first + BigInt(count) !== segs[i + 1]!.first) {
        throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame log ${this.dir}: segment ${path.basename(segs[i]!.seg)} holds ${count} frames, but the next one starts at #${segs[i + 1]!.first}`);
      }
    }
    const last = segs.at(-1);
    if (last === undefined) return;
    const bytes = fs.readFileSync(last.seg);
    const ends: bigint[] = [];
    let pos = 0;
    let expected = last.first;
    let why = '';
    while (pos < bytes.length) {
      const length = bytes.length - pos >= 4 ? bytes.readUInt32LE(pos + Offset.LENGTH) : 0;
      if (length < 32 || length % 16 !== 0 || pos + length > bytes.length) {
        why = 'a torn frame';
        break;
      }
      let frame: Frame | undefined;
      try {
        frame = [...new FrameDecoder().push(bytes.subarray(pos, pos + length))][0];
      } catch (err) {
        why = (err as Error).message;
        break;
      }
      if (frame === undefined || frame.seq !== expected) {
        why = `frame #${frame?.seq} where #${expected} belongs`;
        break;
      }
      pos += length;
      ends.push(BigInt(pos));
      expected++;
    }
    if (pos < bytes.length) {
      this.say(`frame log ${this.dir}: cut back ${bytes.length - pos} bytes after frame #${expected - 1n} in ${path.basename(last.seg)} (${why}): a write the last writer did not finish`);
    }
    const index = Buffer.alloc(ends.length * ENTRY);
    ends.forEach((end, i) => index.writeBigUInt64LE(end, i * ENTRY));
    if (ends.length === 0) {
      // Nothing whole in it: the segment goes, and its frames start the next one.
      fs.rmSync(last.seg, { force: true });
      fs.rmSync(last.idx, { force: true });
      segs.pop();
      const prev = segs.at(-1);
      this.last = prev ? prev.first + BigInt(readIndex(prev.idx).length) - 1n : 0n;
      if (prev) this.reopen(prev);
      return;
    }
    this.segFd = fs.openSync(last.seg, fs.constants.O_RDWR);
    // Only what is wrong is rewritten: the index's modification time tells when the last frame came.
    if (pos < bytes.length) fs.ftruncateSync(this.segFd, pos);
    this.idxFd = fs.openSync(last.idx, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const current = fs.readFileSync(last.idx);
    if (!current.equals(index)) {
      fs.ftruncateSync(this.idxFd, 0);
      fs.writeSync(this.idxFd, index, 0, index.length, 0);
    }
    this.segSize = pos;
    this.last = expected - 1n;
  }

  /** Appends go on in an existing segment. */
  private reopen(s: Segment): void {
    this.segFd = fs.openSync(s.seg, fs.constants.O_RDWR);
    this.idxFd = fs.openSync(s.idx, fs.constants.O_RDWR);
    this.segSize = fs.fstatSync(this.segFd).size;
  }
}

function skip(parts: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < parts.length && n >= parts[i]!.length) n -= parts[i++]!.length;
  if (i === parts.length) return [];
  const rest = parts.slice(i);
  rest[0] = rest[0]!.subarray(n);
  return rest;
}
