import fs from 'node:fs';
import os from 'node:os';
import { FrameEncoder } from '../shared/encoder';
import { OpInput, opMeta } from '../shared/ops';
import { native, ordered } from './order';
import { Spool } from './spool';

/** How many frames go by between two looks at how much the reader has taken (to confirm the spool). */
const CHECK_EVERY = 256;
const KIND = { other: 0, pipe: 1, socket: 2 } as const;
const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/** Frames that were made but reached neither the reader nor the spool. */
export interface Loss {
  /** How many. */
  count: number;
  /** The first one. */
  firstSeq: bigint;
}

/**
 * Writes frames to a file descriptor (the journal's stdout), synchronously and in the store order,
 * after appending each to the spool when there is one. A blocking write is the journal's
 * backpressure: a slow reader throttles the filesystem. The bytes go through the native output
 * (journal/fuse/order.c), which libfuse threads also write WRITE frames to without JavaScript
 * while `nativeOk`: the sequence numbers and what the reader took are kept there, for both.
 *
 * Nothing is written before `start` (the mount is up): a mount that fails leaves no stream behind.
 * If the reader goes away (EPIPE) the sink says so once, loudly, and stops writing to it; with a
 * spool the frames go on into the spool and nothing is lost, without one every later frame is.
 * It knows which frames the reader took: for a pipe, the kernel tells how many bytes are still
 * unread (also after the reader died); for a socket, only that everything was taken when its
 * queue was empty the last time we looked. `loss` then names the first frame lost.
 * One sink per process: the native output is the process's.
 */
export class FrameSink {
  private readonly encoder = new FrameEncoder(1n);
  /** The next sequence number, shared with the native write path. */
  private readonly nextSeq: BigUint64Array;
  private brokenBy: string | undefined;
  private started = false;
  private readonly early: [OpInput, Uint8Array | undefined][] = [];
  private sinceCheck = 0;
  /** Frames not even built since nobody takes them. */
  private skipped = 0;
  private firstSkipped: bigint | undefined;
  private stopWatching: (() => void) | undefined;

  constructor(
    fd: number,
    private readonly log: (message: string) => void,
    private readonly spool?: Spool,
  ) {
    const st = fs.fstatSync(fd);
    this.nextSeq = new BigUint64Array(native.outOpen(fd, st.isFIFO() ? KIND.pipe : st.isSocket() ? KIND.socket : KIND.other));
    this.nextSeq[0] = 1n;
  }

  /** Whether nobody takes frames any more (the reader is gone, and there is no working spool). */
  get broken(): boolean {
    return this.brokenBy !== undefined && (this.spool === undefined || this.spool.brokenAt !== undefined);
  }

  /**
   * Whether WRITE frames may be made natively: the stream runs, its reader is there, and a spool
   * (if any) does not sync every frame. Native frames go to the spool's lent segment first.
   */
  get nativeOk(): boolean {
    return this.started && this.brokenBy === undefined && !(this.spool?.syncsEveryFrame ?? false);
  }

  /**
   * Starts the stream, once the mount is up: writes the header frame (and spools it), then the
   * spooled frames from `replayFrom` on (a stream that goes on from an earlier run: what its reader
   * may not have taken), then whatever was emitted before. Operation frames are numbered from
   * `firstSeq`.
   */
  start(header: Uint8Array, firstSeq: bigint, replayFrom?: bigint): void {
    ordered(() => {
      this.started = true;
      this.spool?.setHeader(header);
      this.deliver([header], 0n);
      if (replayFrom !== undefined && this.spool) {
        const cursor = this.spool.cursor(replayFrom);
        for (let frames = cursor.read(); frames.length > 0 && this.brokenBy === undefined; frames = cursor.read()) {
          for (const f of frames) this.deliver([f.bytes], f.seq);
        }
        cursor.close();
      }
      this.nextSeq[0] = firstSeq;
      if (this.spool) {
        this.spool.lend();
        this.stopWatching = this.watchSpool();
      }
      for (const [op, data] of this.early.splice(0)) this.emit(op, data);
    });
  }

  /** Counts a change that the caller did not build because nobody takes frames. */
  skip(): void {
    this.firstSkipped ??= this.nextSeq[0]!;
    this.skipped++;
  }

  /** The sequence number of the last frame emitted (0n before any). */
  get lastSeq(): bigint {
    return this.nextSeq[0]! - 1n;
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
    return ordered(() => {
      const meta = opMeta(op);
      const seq = this.nextSeq[0]!;
      this.encoder.seq = seq;
      let parts: Uint8Array[];
      if (data === undefined || data.length === 0) {
        parts = [this.encoder.encode(op.type, meta, data)];
      } else {
        const p = this.encoder.encodeParts(op.type, meta, data);
        parts = p.pad.length > 0 ? [p.head, p.data, p.pad] : [p.head, p.data];
      }
      this.nextSeq[0] = seq + 1n;
      if (this.spool) {
        // Native frames went to the spool meanwhile: it is taken back, appended to, and lent
        // again. Whatever the spool throws (its bound's housekeeping), the frame still goes out.
        try {
          this.spool.reclaim();
          this.spool.append(parts, seq);
        } catch (err) {
          this.log(`SPOOL ERROR at frame #${seq}: ${(err as Error).message}`);
        } finally {
          this.spool.lend();
        }
      }
      this.deliver(parts, seq);
      return seq;
    });
  }

  /**
   * The frames lost, or null when every frame reached the reader or the spool (as far as can be
   * known). While the reader lives, everything written reaches it. Once it is gone, a frame it did
   * not take is lost if the spool does not hold it: the spool broke before it, or its bound
   * dropped it.
   */
  loss(): Loss | null {
    const [, , firstPending] = this.status();
    if (this.brokenBy === undefined) return null;
    const end = this.nextSeq[0]! - 1n;
    const undelivered = firstPending >= 0n ? firstPending : this.firstSkipped ?? end + 1n;
    const max = (a: bigint, b: bigint) => (a > b ? a : b);
    let count = 0n;
    let first: bigint | undefined;
    const lose = (from: bigint, to: bigint) => {
      const a = max(from, undelivered);
      if (a > to) return;
      count += to - a + 1n;
      if (first === undefined || a < first) first = a;
    };
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

  /** Writes one frame (given as parts) to the reader, if it is there. */
  private deliver(parts: Uint8Array[], seq: bigint): void {
    if (this.brokenBy !== undefined) return;
    const errno = native.outWrite(parts, seq);
    if (errno !== 0) return this.readerGone(errno);
    if (this.spool && ++this.sinceCheck >= CHECK_EVERY) this.status();
  }

  /**
   * Looks at what the reader has taken (the spool may forget it), and at whether the output broke
   * (also in a native write): [errno or 0, last taken, first not known taken].
   */
  private status(): [number, bigint, bigint] {
    const status = ordered(() => native.outStatus());
    this.sinceCheck = 0;
    if (status[1] >= 0n) this.spool?.confirm(status[1]);
    if (status[0] !== 0 && this.brokenBy === undefined) this.readerGone(status[0], status[2]);
    return status;
  }

  private readerGone(errno: number, firstPending = native.outStatus()[2]): void {
    this.brokenBy = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
    const first = firstPending >= 0n ? firstPending : this.nextSeq[0]!;
    if (this.spool && this.spool.brokenAt === undefined) {
      this.log(`journal reader gone (${this.brokenBy}) before frame #${first}: the frames go on into the spool ${this.spool.dir}, nothing is lost; serve them with: tfs-broadcast --log ${this.spool.dir} SOCKET < /dev/null`);
    } else {
      this.log(`JOURNAL READER GONE (${this.brokenBy}): frames from #${first} on are NOT delivered; the filesystem keeps working`);
    }
  }

  /**
   * Takes the spool back from native frames now and then, even when no JavaScript frame comes:
   * its sync timer, its bound and what it may forget must see them. Returns the stopper.
   */
  private watchSpool(): () => void {
    const timer = setInterval(() => ordered(() => {
      this.spool!.reclaim();
      this.spool!.lend();
      if (this.brokenBy === undefined) this.status(); // what the reader took: the spool may forget it
    }), 250);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Records how far the reader got (before the process ends). */
  finish(): void {
    this.stopWatching?.();
    if (this.spool) ordered(() => this.spool!.reclaim());
    if (this.brokenBy === undefined) this.status();
  }
}
