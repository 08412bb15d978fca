import fs from 'node:fs';
import path from 'node:path';
import { FrameDecoder } from '../shared/decoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, MAGIC, PROTOCOL_VERSION } from '../shared/frame';
import { decodeOp, Op, StreamHeader } from '../shared/ops';
import { CursorStore } from './cursor';
import { ReplayPolicy, Replayer, needsCommit } from './replay';
import { helloFrame } from './source';

export interface MirrorOptions {
  replica: string;
  /** Cursor database; by default `.NAME.tfs-mirror.db` beside the replica. */
  state?: string;
  /** Follow a stream from another journal than the cursor's, starting over. */
  restart?: boolean;
  /** What the replica takes beyond plain entries (device nodes, setuid bits, capabilities). */
  policy?: ReplayPolicy;
  /**
   * How a new replica gets the part of the stream that came before it: 'snapshot' waits for the
   * full snapshot session asked for with `request` (or takes the stream from its start), and may
   * replace what REPLICA held; 'hold' drops every frame until the repair session asked for with
   * `request` (after a copy by other means). Without, a new replica needs the stream's start.
   */
  bootstrap?: 'snapshot' | 'hold';
  /** The token naming this replica's request (matched against SNAPSHOT_BEGIN). */
  request?: string;
  /** Called when a connection's stream header is in (with 'hold': the journal now tracks changes). */
  onHeader?: () => void;
  /**
   * The cursor only ever covers what is on disk: before each commit the replica's filesystem is
   * synced, and the commit itself too. A power cut then costs nothing but the replay of the frames
   * after the cursor. Slower: a sync per commit.
   */
  durable?: boolean;
  log?: (message: string) => void;
}

export interface MirrorResult {
  streamId: string | null;
  applied: number;
  /** Frames already applied before (a repeated stream after a resume). */
  skipped: number;
  /** Sequence number of the last applied frame. */
  seq: bigint;
}

/** The default cursor file: beside the replica, never inside it. */
export function defaultStatePath(replica: string): string {
  const abs = path.resolve(replica);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.tfs-mirror.db`);
}

/** How long applied data frames may wait for their commit (without --durable). */
const COMMIT_MS = 100;

/**
 * Follows a stream onto a replica: decodes frames, skips what the cursor says is applied, applies
 * the rest in order and commits the cursor. Transport-free: it takes any async iterable of chunks.
 */
export class Mirror {
  /** The cursor database: opened at once if it exists, else created with the first stream header. */
  private cursor: CursorStore | null = null;
  private readonly statePath: string;
  private readonly replayer: Replayer;
  private readonly log: (m: string) => void;
  private streamId: string | null;
  private seq: bigint;
  private committed: bigint;
  private lastCommit = 0;
  private commitTimer: NodeJS.Timeout | undefined;
  private commitFailed: unknown;
  private header: StreamHeader | null = null;
  /** Whether the last frame seen (applied or skipped) is an end frame. */
  private atEnd = false;
  /** The snapshot session this replica is bootstrapping from (null: it follows the whole stream). */
  private session: number | null = null;
  /** Whether REPLICA was a replica (had a cursor) before this run. */
  private known = false;
  /** A bootstrap has started over in this run (it is not started over again on reconnection). */
  private bootstrapping = false;
  /** Frames dropped while waiting for this replica's snapshot session. */
  dropped = 0;
  /** Frames applied by this run. */
  get appliedCount(): number {
    return this.applied;
  }

  /** What the snapshot brought so far: entries, and bytes of content. */
  readonly progress = { entries: 0, bytes: 0 };
  private applied = 0;
  private skipped = 0;

  constructor(private readonly options: MirrorOptions) {
    this.log = options.log ?? (() => {});
    const replica = path.resolve(options.replica);
    const state = path.resolve(options.state ?? defaultStatePath(replica));
    if (state === replica || state.startsWith(replica + path.sep)) {
      throw new TfsError(ErrorCode.USAGE, `the cursor database ${state} must not lie inside the replica ${replica}`);
    }
    fs.mkdirSync(replica, { recursive: true });
    this.statePath = state;
    this.replayer = new Replayer(replica, this.log, options.policy, options.durable);
    this.streamId = null;
    this.seq = this.committed = 0n;
    if (fs.existsSync(state)) {
      this.cursor = new CursorStore(state, options.durable);
      const cursor = this.cursor.load();
      this.streamId = cursor.streamId;
      this.seq = this.committed = cursor.seq;
      this.replayer.restoreHandles(cursor.handles);
      this.session = cursor.session;
      this.known = cursor.streamId !== null;
      if (cursor.running !== null) this.checkUncleanStop(cursor.running, replica);
      this.cursor.markRunning(this.replayer.whereabouts(), options.durable ?? false);
    }
  }

  /**
   * The last run did not stop cleanly. If the machine and the replica's mount are the same, only
   * the process died: what it wrote is in the page cache, and resuming is safe. If they changed (a
   * power cut, a crash of the machine, a remount), writes it had not synced may be gone while its
   * cursor counts them: unless it ran with --durable, the replica cannot be trusted.
   */
  private checkUncleanStop(running: { where: string; durable: boolean }, replica: string): void {
    const here = this.replayer.whereabouts();
    if (running.where === here) return this.log(`the last run stopped uncleanly (killed): resuming after #${this.seq}, nothing it wrote is lost`);
    if (running.durable) return this.log(`the last run stopped uncleanly, and the machine or the replica's mount changed since; it ran with --durable, so its cursor (#${this.seq}) covers only what reached the disk: resuming`);
    this.cursor!.close();
    this.replayer.close();
    throw new TfsError(ErrorCode.UNCLEAN_STOP, `the last run on ${replica} did not stop cleanly (${running.where}), and the machine or the replica's mount changed since (${here}): writes it had not synced may be lost while its cursor (#${this.seq}) counts them`, {
      hint: 'Bring the replica to the store\'s state again (a copy of the store, then --restart), and run mirrors with --durable to make a power cut harmless.',
    });
  }

  /** The sequence number of the last frame applied. */
  get position(): bigint {
    return this.seq;
  }

  /** Whether the replica is still bootstrapping (waiting for its session, or in it). */
  get isBootstrapping(): boolean {
    return this.session !== null || (this.options.bootstrap !== undefined && this.seq === 0n);
  }

  /**
   * With 'hold', a connection lost before the repair session began loses what the journal was
   * tracking: the copy cannot be completed exactly any more, and a new attempt must start over.
   */
  get mustStartOver(): boolean {
    return this.options.bootstrap === 'hold' && this.seq === 0n && this.bootstrapping;
  }

  /** The stream the replica follows (null before its first stream). */
  get stream(): string | null {
    return this.streamId;
  }

  /** Applies a whole stream. Resolves at its end frame; rejects with a TfsError naming the frame. */
  async run(source: AsyncIterable<Uint8Array>): Promise<MirrorResult> {
    try {
      if ((await this.apply(source)) === 'cut') throw new TfsError(ErrorCode.TRUNCATED, `the stream was cut off after frame #${this.seq} without an end frame`);
      return this.result();
    } finally {
      this.close();
    }
  }

  /**
   * Applies what one connection brings: its stream header, then frames, until the input ends.
   * Resolves 'end' when the last frame was an end frame, 'cut' otherwise (the cursor is committed
   * either way: a new connection resumes after the last frame applied). An end frame followed by
   * more frames is a stream that went on (a journal started again with its spool): they are
   * applied too. Rejects with a TfsError naming the frame.
   */
  async apply(source: AsyncIterable<Uint8Array>): Promise<'end' | 'cut'> {
    const decoder = new FrameDecoder();
    this.header = null;
    this.atEnd = false;
    try {
      for await (const chunk of source) {
        if (this.commitFailed !== undefined) throw this.commitFailed;
        for (const frame of decoder.push(chunk)) this.accept(decodeOp(frame));
        this.commitSoon();
      }
      decoder.end();
      return this.atEnd ? 'end' : 'cut';
    } finally {
      this.commit();
    }
  }

  /**
   * Commits the data frames applied since the last commit when COMMIT_MS passed since it (or
   * with --durable, at once), else within COMMIT_MS, whether or not more input comes. A kill
   * repeats at most that much of writes (each is idempotent); frames that change names are
   * committed alone anyway.
   */
  private commitSoon(): void {
    if (this.options.durable || Date.now() - this.lastCommit >= COMMIT_MS) return this.commit();
    if (this.commitTimer !== undefined) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = undefined;
      try {
        this.commit();
      } catch (err) {
        // Raised where the stream is applied (the next chunk, or its end), not as an uncaught error.
        this.commitFailed = err;
      }
    }, COMMIT_MS);
    this.commitTimer.unref();
  }

  /** Records the cursor, marks a clean stop, and closes the replica and the cursor database. */
  close(): void {
    this.commit();
    this.cursor?.markStopped();
    this.replayer.close();
    this.cursor?.close();
  }

  /** What was done so far. */
  result(): MirrorResult {
    return { streamId: this.streamId, applied: this.applied, skipped: this.skipped, seq: this.seq };
  }

  private accept(op: Op): void {
    if (op.type === FrameType.STREAM_HEADER) return this.begin(op);
    if (op.type === FrameType.ERROR) {
      const code = (Object.values(ErrorCode) as string[]).includes(op.code) ? (op.code as ErrorCode) : ErrorCode.PEER;
      throw new TfsError(code, `the broadcaster refused: ${op.message}`, { hint: op.hint });
    }
    if (this.header === null) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'the stream does not begin with a stream header', { seq: op.seq });
    this.atEnd = op.type === FrameType.END;
    if (op.seq <= this.seq) {
      this.skipped++;
      return;
    }
    if (op.seq !== this.seq + 1n) {
      if (this.seq !== 0n) {
        throw new TfsError(ErrorCode.SEQUENCE_GAP, `expected frame #${this.seq + 1n} next, got #${op.seq}: frames are missing`, { seq: op.seq });
      }
      if (!this.startsHere(op)) return;
    } else if (this.seq === 0n && this.session === null && !this.startsHere(op)) {
      return;
    }
    if (this.skips(op)) {
      this.seq = op.seq;
      this.skipped++;
      return;
    }
    // A frame that changes names is committed alone: what came before it is committed first, so
    // that a kill can only make this one frame repeat (each is idempotent), never a run of earlier
    // data frames whose paths it has since changed.
    const alone = needsCommit(op.type);
    if (alone) {
      this.replayer.prepare(op);
      this.commit();
    }
    this.replayer.apply(op);
    this.seq = op.seq;
    this.applied++;
    if (op.session !== undefined) {
      if (op.type === FrameType.WRITE) this.progress.bytes += op.data.length;
      else if (op.type === FrameType.CREATE || op.type === FrameType.MKDIR || op.type === FrameType.SYMLINK || op.type === FrameType.MKNOD) this.progress.entries++;
    }
    if (op.type === FrameType.SNAPSHOT_END && op.id === this.session) {
      this.replayer.namelessHandles(op.nameless ?? []);
      this.session = null;
      this.log(`bootstrap done at frame #${op.seq}: the replica equals the store as of then, and follows the stream`);
    }
    if (alone) this.commit();
  }

  /**
   * A new replica (no frame applied yet) sees its first frame: whether it can start from it. It
   * can at the stream's first frame (the store was empty, or a snapshot comes first), and at the
   * begin frame of the snapshot session it is waiting for. A replica waiting for its session drops
   * what comes before; any other replica cannot start in the middle of a stream.
   */
  private startsHere(op: Op): boolean {
    const fromStart = op.seq === this.header!.firstSeq && this.header!.origin !== 'changes';
    const mine = op.type === FrameType.SNAPSHOT_BEGIN && (op.request === undefined ? op.full && op.seq === this.header!.firstSeq : op.request === this.options.request);
    if (mine || (fromStart && this.options.bootstrap !== 'hold')) {
      if (op.type === FrameType.SNAPSHOT_BEGIN) this.adopt(op.id, op.full);
      else if (this.options.bootstrap !== undefined) this.log(`bootstrapping from the stream's first frame, which the broadcaster still holds: no snapshot needed`);
      return true;
    }
    if (this.options.bootstrap !== undefined) {
      this.dropped++;
      return false;
    }
    throw new TfsError(ErrorCode.HISTORY_GONE, `this replica is new, and its stream is given from frame #${op.seq}, not from its beginning: the changes before are not here`, {
      hint: 'Start it with --bootstrap (from a broadcaster), or follow the stream from its start.',
    });
  }

  /** Starts bootstrapping from snapshot session `id` (a full one replaces what REPLICA holds). */
  private adopt(id: number, full: boolean): void {
    if (full && !this.known && this.options.bootstrap === undefined && this.replayer.holdsAnything()) {
      throw new TfsError(ErrorCode.REFUSED, 'REPLICA is not empty and was no replica (it has no cursor): the snapshot would replace what it holds', {
        hint: 'Give an empty directory, or pass --bootstrap to replace its content.',
      });
    }
    this.session = id;
    this.log(`bootstrapping from snapshot ${id}${full ? '' : ' (a repair of what changed during the copy)'}`);
  }

  /** Frames of another snapshot session than this replica's, and live frames its session brings otherwise. */
  private skips(op: Op): boolean {
    if (op.session !== undefined) return op.session !== this.session;
    if (op.skipIn !== undefined) return op.skipIn === this.session;
    return false;
  }

  private begin(header: StreamHeader): void {
    if (header.magic !== MAGIC) throw new TfsError(ErrorCode.CORRUPT_FRAME, `not a TFS stream (magic ${JSON.stringify(header.magic)})`, { seq: header.seq });
    if (header.version !== PROTOCOL_VERSION) {
      throw new TfsError(ErrorCode.UNSUPPORTED_VERSION, `stream speaks protocol version ${header.version}, this mirror ${PROTOCOL_VERSION}`, { seq: header.seq });
    }
    if (this.header !== null) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'a second stream header inside the stream', { seq: header.seq });
    this.header = header;
    // A bootstrap starts over, whatever the cursor says (once: a reconnection mid-bootstrap resumes).
    const fresh = this.options.bootstrap !== undefined && !this.bootstrapping;
    if (this.streamId !== header.streamId || fresh) {
      if (this.streamId !== null && this.streamId !== header.streamId && !this.options.restart && !fresh) {
        throw new TfsError(ErrorCode.STREAM_MISMATCH, `this replica follows stream ${this.streamId}, not ${header.streamId}; pass --restart to start over`, { seq: header.seq });
      }
      if (this.streamId !== null && this.streamId !== header.streamId) this.log(`starting over: following stream ${header.streamId} instead of ${this.streamId}`);
      if (this.cursor === null) {
        this.cursor = new CursorStore(this.statePath, this.options.durable);
        this.cursor.markRunning(this.replayer.whereabouts(), this.options.durable ?? false);
      }
      this.cursor.reset(header.streamId);
      this.replayer.closeFiles();
      this.streamId = header.streamId;
      this.seq = this.committed = 0n;
      this.session = null;
      this.bootstrapping = this.options.bootstrap !== undefined;
    }
    this.options.onHeader?.();
  }

  /** The HELLO for a connection: a bootstrap's request, or where the replica stands. */
  hello(): Buffer {
    // Until the snapshot session begins (also when reconnecting before it), the request is made again.
    if (this.options.bootstrap !== undefined && (!this.bootstrapping || this.seq === 0n)) return helloFrame(undefined, undefined, this.options.bootstrap, this.options.request);
    return helloFrame(this.streamId ?? undefined, this.streamId === null ? undefined : this.seq);
  }

  private commit(): void {
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    this.lastCommit = Date.now();
    const changes = this.replayer.takeHandleChanges();
    if (this.cursor === null || (this.seq === this.committed && changes.size === 0)) return;
    // Durable: nothing the cursor counts may still be only in memory.
    if (this.options.durable) this.replayer.sync();
    this.cursor.commit(this.seq, changes, this.session);
    this.committed = this.seq;
  }
}
