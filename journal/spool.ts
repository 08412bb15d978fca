import fs from 'node:fs';
import path from 'node:path';
import { Offset } from '../shared/frame';
import { FrameLogWriter, LogCursor, SyncPolicy, segmentBytesFor } from '../shared/framelog';
import { Tree } from '../shared/tree';
import { native } from './order';

export interface SpoolOptions {
  /** The spool never holds more: the oldest segments go (loudly, if no reader took them). */
  maxBytes: number;
  sync?: SyncPolicy;
  log: (message: string) => void;
}

/** How often (in appends) the spool's size is checked against its bound. */
const CHECK_EVERY = 256;

/**
 * The journal's spool (`--spool DIR`): the frame log of its stream, written before each frame
 * goes to stdout, so that nothing is lost when the reader goes away: the frames go on into DIR,
 * from where `tfs-broadcast --log DIR` serves them. It is the same log a broadcaster keeps, and a
 * broadcaster given the same DIR only reads it: each frame is stored once.
 *
 * It never fills the disk silently: past `maxBytes` the oldest segments go, and if the reader had
 * not taken them yet, the spool says so loudly, with the frames it dropped. A spool that cannot
 * take a frame (a full disk) says so loudly and stops; the filesystem never fails because of it.
 */
export class Spool {
  private appends = 0;
  /** The last frame the reader of stdout is known to have taken (0n: none). */
  private confirmed = 0n;
  private readonly deliveredFile: string;
  /** The first frame the spool could not take; every later one is missing from it too. */
  brokenAt: bigint | undefined;
  /** Ranges of frames dropped by the bound before the reader was known to have them. */
  readonly dropped: { fromSeq: bigint; toSeq: bigint }[] = [];

  private constructor(
    private readonly log: FrameLogWriter,
    private readonly options: SpoolOptions,
  ) {
    this.deliveredFile = path.join(log.dir, 'delivered');
    try {
      this.confirmed = BigInt(fs.readFileSync(this.deliveredFile, 'utf8').trim());
    } catch {
      // a new spool
    }
  }

  /** Opens (or creates) the spool in DIR; refuses when another process writes it. */
  static open(dir: string, options: SpoolOptions): Spool {
    return new Spool(FrameLogWriter.open(dir, { sync: options.sync, log: options.log, segmentBytes: segmentBytesFor(options.maxBytes) }), options);
  }

  get dir(): string {
    return this.log.dir;
  }

  /** The stream header the spool holds (a stream to continue), or null for a new spool. */
  get header(): Uint8Array | null {
    return this.log.header;
  }

  get streamId(): string | null {
    return this.log.streamId;
  }

  get lastSeq(): bigint {
    return this.log.lastSeq;
  }

  /** The frame from which the reader of the previous run may not have everything. */
  get firstUnconfirmed(): bigint {
    return this.confirmed + 1n > this.log.firstSeq ? this.confirmed + 1n : this.log.firstSeq;
  }

  setHeader(frame: Uint8Array): void {
    this.log.setHeader(frame);
  }

  /** Frames already in the spool, from `fromSeq` on (to send them again to a new reader). */
  cursor(fromSeq: bigint): LogCursor {
    return this.log.cursor(fromSeq);
  }

  /**
   * Appends one frame. Returns false once the spool is broken: it said so, and every later frame
   * is missing from it too (they must reach the reader, or they are lost).
   */
  append(parts: readonly Uint8Array[], seq: bigint): boolean {
    if (this.brokenAt !== undefined) return false;
    try {
      this.log.append(parts);
    } catch (err) {
      // A full disk: dropping what the reader has taken may make room for this frame.
      if (this.log.trim({ maxBytes: 0, keepFrom: this.confirmed + 1n }) !== null) {
        try {
          this.log.append(parts);
          return true;
        } catch {
          // still no room
        }
      }
      this.broke(seq, (err as Error).message);
      return false;
    }
    if (++this.appends >= CHECK_EVERY) {
      this.appends = 0;
      this.trim(this.options.maxBytes);
    }
    return true;
  }

  /** The spool takes no frame from `seq` on: said loudly. */
  private broke(seq: bigint, why: string): void {
    this.brokenAt = seq;
    this.options.log(`SPOOL BROKEN: ${why}. Frames from #${seq} on are NOT spooled; they only go to the reader, and are lost if it goes away too. The filesystem keeps working.`);
  }

  /** Whether every frame is synced as it is appended (native frames cannot be). */
  get syncsEveryFrame(): boolean {
    return this.options.sync === SyncPolicy.ALWAYS;
  }

  /**
   * Lends the segment being appended to the native write path (journal/fuse/order.c), or tells it
   * there is no working spool. Call in the store order; `reclaim` before touching the spool again.
   */
  lend(): void {
    if (this.brokenAt !== undefined || this.syncsEveryFrame) return native.spoolNone();
    const seg = this.log.lend();
    if (seg === null) native.spoolLend(-1, -1, 0n, 0, 0n, 0);
    else native.spoolLend(seg.segFd, seg.idxFd, seg.first, seg.size, seg.last, seg.limit);
  }

  /**
   * Takes the segment back from the native write path, with what it appended; a frame it could
   * not append (a full disk) is appended again here, with the same remedies as any other.
   */
  reclaim(): void {
    const [size, last, appended, errno, failed] = native.spoolReclaim();
    if (appended > 0) {
      this.log.takeBack(size, last);
      this.appends += appended;
      if (this.appends >= CHECK_EVERY) {
        this.appends = 0;
        this.trim(this.options.maxBytes);
      }
    }
    if (failed !== null) this.append([failed], failed.readBigUInt64LE(Offset.SEQ));
    // A failed append whose frame could not even be kept (no memory): the spool misses it.
    else if (errno !== 0) this.broke(this.log.lastSeq + 1n, `a native append failed (errno ${errno}) and its frame could not be kept`);
  }

  /** The reader of stdout has taken every frame up to `seq`. */
  confirm(seq: bigint): void {
    if (seq <= this.confirmed) return;
    this.confirmed = seq;
    try {
      fs.writeFileSync(this.deliveredFile, `${seq}\n`, { mode: 0o600 });
    } catch {
      // a full disk: only the replay to the next reader starts earlier
    }
  }

  /** Keeps the spool within `maxBytes`; says loudly when that drops frames no reader took. */
  private trim(maxBytes: number): void {
    const trimmed = this.log.trim({ maxBytes });
    if (trimmed !== null && trimmed.toSeq > this.confirmed) {
      this.dropped.push({ fromSeq: this.confirmed + 1n > trimmed.fromSeq ? this.confirmed + 1n : trimmed.fromSeq, toSeq: trimmed.toSeq });
      this.options.log(
        `SPOOL FULL (${this.options.maxBytes} bytes): dropped frames #${trimmed.fromSeq} to #${trimmed.toSeq}, of which #${this.confirmed + 1n > trimmed.fromSeq ? this.confirmed + 1n : trimmed.fromSeq} on had reached no reader. Replicas behind #${trimmed.toSeq + 1n} must be bootstrapped again; a larger --spool-max keeps more.`,
      );
    }
  }

  /** Time of the last frame appended, ns since the epoch (null for an empty spool). */
  lastAppendNs(): bigint | null {
    return this.log.lastAppendNs();
  }

  close(): void {
    native.spoolNone();
    this.log.close();
  }
}

/** The default --spool-max: the smaller of 4 GiB and half the space free under DIR now. */
export function defaultSpoolMax(dir: string): number {
  let probe = path.resolve(dir);
  while (!fs.existsSync(probe)) probe = path.dirname(probe);
  const st = fs.statfsSync(probe);
  return Math.min(4 * 1024 ** 3, Math.floor((st.bavail * st.bsize) / 2));
}

/**
 * Looks for an entry of STORE changed after `sinceNs` (its ctime is later): a change no frame of
 * the spooled stream carries, made while no journal was mounted (or by a journal that died between
 * a change and its frame). Returns its path ('' for the root), or null.
 */
export function changedSince(store: string, sinceNs: bigint): string | null {
  const tree = new Tree(store, false);
  try {
    const walk = (rel: string): string | null => {
      const st = tree.lstat(rel);
      if (st.ctimeNs > sinceNs) return rel;
      if ((st.mode & 0o170000) !== 0o040000) return null;
      for (const name of tree.readdir(rel)) {
        const found = walk(rel === '' ? name : `${rel}/${name}`);
        if (found !== null) return found;
      }
      return null;
    };
    return walk('');
  } finally {
    tree.close();
  }
}
