import fs from 'node:fs';
import { FrameEncoder } from '../shared/encoder';
import { Offset } from '../shared/frame';
import { OpInput, opMeta } from '../shared/ops';
import { posix } from '../shared/posix';
import { Spool } from './spool';

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** How many frames go by between two looks at how much the reader has taken. */
const CHECK_EVERY = 256;

/** Frames that were made but reached neither the reader nor the spool. */
export interface Loss {
  /** How many. */
  count: number;
  /** The first one. */
  firstSeq: bigint;
}

/**
 * Writes frames to a file descriptor (the journal's stdout), synchronously and in call order,
 * after appending each to the spool when there is one. A blocking write is the journal's
 * backpressure: a slow reader throttles the filesystem.
 *
 * Nothing is written before `start` (the mount is up): a mount that fails leaves no stream behind.
 * If the reader goes away (EPIPE) the sink says so once, loudly, and stops writing to it; with a
 * spool the frames go on into the spool and nothing is lost, without one every later frame is.
 * It knows which frames the reader took: for a pipe, the kernel tells how many bytes are still
 * unread (also after the reader died); for a socket, only that everything was taken when its
 * queue was empty the last time we looked. `loss` then names the first frame lost.
 */
export class FrameSink {
  private encoder = new FrameEncoder(1n);
  private brokenBy: string | undefined;
  private readonly kind: 'pipe' | 'socket' | 'other';
  private started = false;
  private readonly early: [OpInput, Uint8Array | undefined][] = [];
  /** Bytes written so far. */
  private written = 0;
  /** Bytes the reader is known to have taken. */
  private delivered = 0;
  /** Sequence numbers and end offsets of frames written and not known to be taken, oldest first. */
  private pendingSeqs: bigint[] = [];
  private pendingEnds: number[] = [];
  private pendingHead = 0;
  /** Frames not even built since nobody takes them. */
  private skipped = 0;
  private firstSkipped: bigint | undefined;

  constructor(
    private readonly fd: number,
    private readonly log: (message: string) => void,
    private readonly spool?: Spool,
  ) {
    const st = fs.fstatSync(fd);
    this.kind = st.isFIFO() ? 'pipe' : st.isSocket() ? 'socket' : 'other';
  }

  /** Whether nobody takes frames any more (the reader is gone, and there is no working spool). */
  get broken(): boolean {
    return this.brokenBy !== undefined && (this.spool === undefined || this.spool.brokenAt !== undefined);
  }

  /**
   * Starts the stream, once the mount is up: writes the header frame (and spools it), then the
   * spooled frames from `replayFrom` on (a stream that goes on from an earlier run: what its reader
   * may not have taken), then whatever was emitted before. Operation frames are numbered from
   * `firstSeq`.
   */
  start(header: Uint8Array, firstSeq: bigint, replayFrom?: bigint): void {
    this.encoder = new FrameEncoder(firstSeq);
    this.started = true;
    this.spool?.setHeader(header);
    this.deliver(header, [header]);
    if (replayFrom !== undefined && this.spool) {
      const cursor = this.spool.cursor(replayFrom);
      for (let frames = cursor.read(); frames.length > 0 && this.brokenBy === undefined; frames = cursor.read()) {
        for (const f of frames) this.deliver(f.bytes, [f.bytes]);
      }
      cursor.close();
    }
    for (const [op, data] of this.early.splice(0)) this.emit(op, data);
  }

  /** Counts a change that the caller did not build because nobody takes frames. */
  skip(): void {
    this.firstSkipped ??= this.encoder.seq;
    this.skipped++;
  }

  /** The sequence number of the last frame emitted (0n before any). */
  get lastSeq(): bigint {
    return this.encoder.seq - 1n;
  }

  /**
   * Emits one op; `data` (write contents, xattr value) is written from where it lies, never copied.
   * Returns the frame's sequence number (0n while the stream has not started, or nobody takes frames).
   */
  emit(op: OpInput, data?: Uint8Array): bigint {
    if (!this.started) {
      this.early.push([op, data === undefined ? undefined : Buffer.from(data)]);
      return 0n;
    }
    if (this.broken) {
      this.skip();
      return 0n;
    }
    const meta = opMeta(op);
    let parts: Uint8Array[];
    if (data === undefined || data.length === 0) {
      parts = [this.encoder.encode(op.type, meta, data)];
    } else {
      const p = this.encoder.encodeParts(op.type, meta, data);
      parts = p.pad.length > 0 ? [p.head, p.data, p.pad] : [p.head, p.data];
    }
    const seq = this.encoder.seq - 1n;
    this.spool?.append(parts, seq);
    this.deliver(parts[0]!, parts);
    return seq;
  }

  /**
   * The frames lost, or null when every frame reached the reader or the spool (as far as can be
   * known). While the reader lives, everything written reaches it. Once it is gone, a frame it did
   * not take is lost if the spool does not hold it: the spool broke before it, or its bound
   * dropped it.
   */
  loss(): Loss | null {
    if (this.brokenBy === undefined) return null;
    const unsent = this.pendingSeqs.length - this.pendingHead;
    const undelivered = unsent > 0 ? this.pendingSeqs[this.pendingHead]! : this.firstSkipped ?? this.encoder.seq;
    const max = (a: bigint, b: bigint) => (a > b ? a : b);
    let count = 0n;
    let first: bigint | undefined;
    const lose = (from: bigint, to: bigint) => {
      const a = max(from, undelivered);
      if (a > to) return;
      count += to - a + 1n;
      if (first === undefined || a < first) first = a;
    };
    const end = this.encoder.seq - 1n;
    if (!this.spool) lose(undelivered, end);
    else {
      for (const d of this.spool.dropped) lose(d.fromSeq, d.toSeq);
      if (this.spool.brokenAt !== undefined) lose(this.spool.brokenAt, end);
    }
    if (this.skipped > 0) {
      count += BigInt(this.skipped);
      first ??= this.firstSkipped;
    }
    return first === undefined ? null : { count: Number(count), firstSeq: first };
  }

  /** Writes one frame (given as parts; the first holds its header) to the reader, if it is there. */
  private deliver(head: Uint8Array, parts: Uint8Array[]): void {
    if (this.brokenBy !== undefined) return;
    let length = 0;
    for (const p of parts) length += p.length;
    this.pendingSeqs.push(Buffer.from(head.buffer, head.byteOffset, head.length).readBigUInt64LE(Offset.SEQ));
    this.pendingEnds.push(this.written + length);
    this.writeAll(parts);
    if (this.pendingSeqs.length - this.pendingHead >= CHECK_EVERY) this.refresh();
  }

  private writeAll(buffers: Uint8Array[]): void {
    let pending = buffers;
    for (;;) {
      let written: number;
      try {
        written = fs.writevSync(this.fd, pending);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          // stdout may have been left non-blocking by whoever shares it; wait for room.
          Atomics.wait(sleeper, 0, 0, 1);
          continue;
        }
        this.brokenBy = code ?? String(err);
        // A pipe still tells how much its dead reader never took; a socket forgets (see refresh).
        if (this.kind === 'pipe') this.refresh();
        const first = this.pendingSeqs[this.pendingHead]!;
        if (this.spool && this.spool.brokenAt === undefined) {
          this.log(`journal reader gone (${this.brokenBy}) before frame #${first}: the frames go on into the spool ${this.spool.dir}, nothing is lost; serve them with: tfs-broadcast --log ${this.spool.dir} SOCKET < /dev/null`);
        } else {
          this.log(`JOURNAL READER GONE (${this.brokenBy}): frames from #${first} on are NOT delivered; the filesystem keeps working`);
        }
        return;
      }
      this.written += written;
      pending = skipBytes(pending, written);
      if (pending.length === 0) return;
    }
  }

  /** Learns how much the reader has taken, and forgets the frames it took. */
  private refresh(): void {
    const unread = posix.unreadBytes(this.fd);
    if (this.kind === 'pipe' && unread >= 0) this.delivered = this.written - unread;
    else if (this.kind === 'other' || (this.kind === 'socket' && unread === 0 && this.brokenBy === undefined)) this.delivered = this.written;
    const before = this.pendingHead;
    while (this.pendingHead < this.pendingSeqs.length && this.pendingEnds[this.pendingHead]! <= this.delivered) this.pendingHead++;
    if (this.pendingHead > before) this.spool?.confirm(this.pendingSeqs[this.pendingHead - 1]!);
    if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pendingSeqs.length) {
      this.pendingSeqs = this.pendingSeqs.slice(this.pendingHead);
      this.pendingEnds = this.pendingEnds.slice(this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /** Records how far the reader got (before the process ends). */
  finish(): void {
    if (this.brokenBy === undefined) this.refresh();
  }
}

function skipBytes(buffers: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < buffers.length && n >= buffers[i]!.length) n -= buffers[i++]!.length;
  if (i === buffers.length) return [];
  const rest = buffers.slice(i);
  rest[0] = rest[0]!.subarray(n);
  return rest;
}
