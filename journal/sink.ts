import fs from 'node:fs';
import { FrameEncoder } from '../shared/encoder';
import { OpInput, opMeta } from '../shared/ops';
import { posix } from '../shared/posix';

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** How many frames go by between two looks at how much the reader has taken. */
const CHECK_EVERY = 256;

/** Frames that were made but did not reach the reader. */
export interface Loss {
  /** How many. */
  count: number;
  /** The first one: every frame from it on is lost (none after it reached the reader). */
  firstSeq: bigint;
}

/**
 * Writes frames to a file descriptor (the journal's stdout), synchronously and in call order.
 * A blocking write is the journal's backpressure: a slow reader throttles the filesystem.
 *
 * Nothing is written before `start` (the mount is up): a mount that fails leaves no stream behind.
 * If the reader goes away (EPIPE) the sink says so once, loudly, and drops every later frame,
 * so that the filesystem keeps working. It knows which frames the reader took: for a pipe, the
 * kernel tells how many bytes are still unread (also after the reader died); for a socket, only
 * that everything was taken when its queue was empty the last time we looked. `loss` then names
 * the first frame not known to have reached the reader.
 */
export class FrameSink {
  private readonly encoder = new FrameEncoder(0n);
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
  /** Frames not even built or written since the reader went away. */
  private skipped = 0;
  private firstSkipped: bigint | undefined;

  constructor(
    private readonly fd: number,
    private readonly log: (message: string) => void,
  ) {
    const st = fs.fstatSync(fd);
    this.kind = st.isFIFO() ? 'pipe' : st.isSocket() ? 'socket' : 'other';
  }

  /** Whether the reader went away (every later frame is dropped). */
  get broken(): boolean {
    return this.brokenBy !== undefined;
  }

  /** Writes the stream header, then whatever was emitted before. Called once the mount is up. */
  start(header: OpInput): void {
    this.started = true;
    this.emit(header);
    for (const [op, data] of this.early.splice(0)) this.emit(op, data);
  }

  /** Counts a change that the caller did not build because the reader is gone. */
  skip(): void {
    this.firstSkipped ??= this.encoder.seq;
    this.skipped++;
  }

  /** Emits one op; `data` (write contents, xattr value) is written from where it lies, never copied. */
  emit(op: OpInput, data?: Uint8Array): void {
    if (!this.started) {
      this.early.push([op, data === undefined ? undefined : Buffer.from(data)]);
      return;
    }
    if (this.brokenBy !== undefined) return this.skip();
    const meta = opMeta(op);
    const seq = this.encoder.seq;
    let buffers: Uint8Array[];
    if (data === undefined || data.length === 0) {
      buffers = [this.encoder.encode(op.type, meta, data)];
    } else {
      const parts = this.encoder.encodeParts(op.type, meta, data);
      buffers = parts.pad.length > 0 ? [parts.head, parts.data, parts.pad] : [parts.head, parts.data];
    }
    let length = 0;
    for (const b of buffers) length += b.length;
    this.pendingSeqs.push(seq);
    this.pendingEnds.push(this.written + length);
    this.writeAll(buffers);
    if (this.pendingSeqs.length - this.pendingHead >= CHECK_EVERY) this.refresh();
  }

  /** The frames that did not reach the reader, or null when every frame did (as far as can be known). */
  loss(): Loss | null {
    // While the reader lives, everything written reaches it.
    if (this.brokenBy === undefined) return null;
    const unsent = this.pendingSeqs.length - this.pendingHead;
    const count = unsent + this.skipped;
    if (count === 0) return null;
    return { count, firstSeq: unsent > 0 ? this.pendingSeqs[this.pendingHead]! : this.firstSkipped! };
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
        this.log(`JOURNAL READER GONE (${this.brokenBy}): frames from #${first} on are NOT delivered; the filesystem keeps working`);
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
    while (this.pendingHead < this.pendingSeqs.length && this.pendingEnds[this.pendingHead]! <= this.delivered) this.pendingHead++;
    if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pendingSeqs.length) {
      this.pendingSeqs = this.pendingSeqs.slice(this.pendingHead);
      this.pendingEnds = this.pendingEnds.slice(this.pendingHead);
      this.pendingHead = 0;
    }
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
