import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { once } from 'node:events';
import { FrameDecoder } from '../shared/decoder';
import { FrameEncoder } from '../shared/encoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { Frame, FrameType, PROTOCOL_VERSION } from '../shared/frame';
import { FrameLog, FrameLogWriter, LogCursor, Retention, SyncPolicy, segmentBytesFor } from '../shared/framelog';
import { decodeOp, opMeta } from '../shared/ops';
import { Window } from './window';

/** What to do, without a frame log, with a client that cannot keep up. */
export const SlowClientPolicy = {
  /** Hold the stream (and so throttle the journal) until it catches up. */
  WAIT: 'wait',
  /** Disconnect it if it stays behind for `slowClientGraceMs`; it resumes from its cursor later. */
  DISCONNECT: 'disconnect',
} as const;
export type SlowClientPolicy = (typeof SlowClientPolicy)[keyof typeof SlowClientPolicy];

export interface BroadcastOptions {
  /** The UNIX socket to listen on; none when clients only come by another transport (addClient). */
  socketPath?: string;
  /** The group (gid) whose members may connect to the UNIX socket too (mode 0660); else 0600. */
  socketGroup?: number;
  /** Clients at once, over every transport; one more is refused (TFS_BUSY) and retries later (default 256). */
  maxClients?: number;
  /** A frame log: clients are served from their cursor, from disk while behind, live once caught up. */
  logDir?: string;
  /** How much the log keeps, when this broadcaster writes it. */
  retain?: Retention;
  sync?: SyncPolicy;
  /** Hold the stream until this many clients are connected. */
  minClients?: number;
  /** Bytes of the most recent frames held in memory (default 8 MiB); without a log, how far a client may fall behind. */
  clientBuffer?: number;
  /** Without a log: what happens to a client that falls further behind than `clientBuffer`. */
  slowClient?: SlowClientPolicy;
  /** With DISCONNECT: how long a client may stay that far behind (default 2000 ms). */
  slowClientGraceMs?: number;
  /** A client must say HELLO within this time (default 10000 ms). */
  handshakeMs?: number;
  /**
   * After the end frame, how long to keep serving once no client has connected for that long
   * (default 0 for a stream on stdin, 15 s when following a log: mirrors that lost their
   * connection come back within their 10 s backoff and get the end).
   */
  lingerMs?: number;
  /**
   * The journal's control socket, instead of the path its stream header names: for a journal on
   * another machine, a local socket forwarded to it (ssh -L LOCAL:REMOTE).
   */
  control?: string;
  log?: (message: string) => void;
}

/** Bytes queued in one client's socket before its pump waits for 'drain'. */
const HIGH_WATER = 256 * 1024;
/** The longest one client's pump writes before letting the others (and the input) run. */
const SLICE = 1024 * 1024;
/** How often the tail of a log written by another process is looked at, besides inotify. */
const TAIL_POLL_MS = 100;

interface Session {
  id: number;
  /** The client's connection: a UNIX socket, or a WebSocket as a stream (one frame per message). */
  socket: Duplex;
  /** Who the client is, for the log: its address, or the UNIX socket. */
  peer: string;
  hello: FrameDecoder;
  state: 'hello' | 'waiting' | 'live' | 'done';
  /** The next frame this client gets. */
  next: bigint;
  streamId?: string;
  fromSeq?: bigint;
  /** HELLO's bootstrap ('snapshot' or 'hold') and its request token. */
  bootstrap?: string;
  request?: string;
  /** Waiting for the journal's answer: counted as live (the window keeps its frames), not yet served. */
  held?: boolean;
  /** The client asked for its repair session (once per connection). */
  requested?: boolean;
  cursor?: LogCursor;
  handshake?: NodeJS.Timeout;
  scheduled: boolean;
}

/**
 * An in-order fan-out of one stream to every client of a UNIX socket. Frames are forwarded as
 * they are, split by their length; the routing header's type and sequence number are all it
 * reads of them (to recognise the header and the end, and to serve positions).
 *
 * Each client names, in its HELLO, the stream it follows and the last frame it has; it gets the
 * stream header, then every frame after that one, in order, with no gap and no duplicate:
 * - from the in-memory window of the most recent frames while it keeps up;
 * - from the frame log (`logDir`) while it is behind: then it never slows the input or the other
 *   clients, and memory stays bounded by the window and one socket buffer per client;
 * - without a log, a client that falls out of the window holds the input (WAIT) or is dropped
 *   (DISCONNECT), and one whose cursor is older than the window is refused.
 * A client whose stream is another, or whose next frame is no longer retained, gets an ERROR frame
 * that says what to do (bootstrap again), and the connection is closed.
 *
 * The input is a stream (stdin), or the log itself when another process (the journal's spool)
 * writes it. When the log is written by another process, this broadcaster only reads it.
 */
export class Broadcaster {
  private readonly server = net.createServer();
  private readonly sessions = new Set<Session>();
  private readonly log: (m: string) => void;
  private readonly window: Window;
  private readonly minClients: number;
  private readonly slowClient: SlowClientPolicy;
  private readonly handshakeMs: number;
  private header: Buffer | null = null;
  private streamId: string | null = null;
  /** From the stream header: what its start brings a new replica, and the journal's control socket. */
  private origin: string | undefined;
  private control: string | undefined;
  /** The frame log: written here (`writer`), or by another process and only read here. */
  private writer: FrameLogWriter | null = null;
  private store: FrameLog | null = null;
  /** The first frame not available yet (in the window or the log). */
  private liveNext = 1n;
  /** Whether the last frame taken is an end frame (the stream may still go on after it). */
  private atEnd = false;
  /** No frame will come any more: clients that have everything are closed. */
  private inputDone = false;
  private nextSessionId = 1;
  private wake: (() => void) | null = null;
  private appendsSinceTrim = 0;
  private closed = false;
  private lastConnect = 0;

  constructor(private readonly options: BroadcastOptions) {
    this.log = options.log ?? (() => {});
    this.window = new Window(options.clientBuffer ?? 8 * 1024 * 1024);
    this.minClients = options.minClients ?? 0;
    this.slowClient = options.slowClient ?? SlowClientPolicy.WAIT;
    this.handshakeMs = options.handshakeMs ?? 10_000;
    this.server.on('connection', (socket) => this.addClient(socket, 'the UNIX socket'));
  }

  /** Clients past their HELLO, still following the stream. */
  get clientCount(): number {
    let n = 0;
    for (const s of this.sessions) if (s.state === 'live' || s.state === 'waiting') n++;
    return n;
  }

  /** Connections open now (clients past their HELLO, and those still saying it). */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /** The most clients at once (`maxClients`). */
  get maxClients(): number {
    return this.options.maxClients ?? 256;
  }

  /**
   * Starts listening on the UNIX socket, if there is one: mode 0600 (0660 with `socketGroup`);
   * clears a socket file left by a dead broadcaster, never takes over a live one.
   */
  async listen(): Promise<void> {
    const { socketPath } = this.options;
    if (socketPath === undefined) return;
    if (fs.existsSync(socketPath)) {
      if (await isLive(socketPath)) throw new TfsError(ErrorCode.PEER, `another broadcaster is listening on ${socketPath}`);
      fs.unlinkSync(socketPath);
    }
    // The socket file is created by bind(), inside listen(): the umask makes it 0600 from the start.
    const umask = process.umask(0o177);
    try {
      this.server.listen(socketPath);
    } finally {
      process.umask(umask);
    }
    await once(this.server, 'listening');
    // Opened to a group only once it belongs to that group (never 0660 with the creator's group).
    if (this.options.socketGroup !== undefined) {
      fs.chownSync(socketPath, -1, this.options.socketGroup);
      fs.chmodSync(socketPath, 0o660);
    }
  }

  /**
   * Serves the stream until its end frame has reached every client. `input` is the stream (stdin);
   * null serves a log that another process writes (the journal's spool), following it to its end.
   */
  async run(input: AsyncIterable<Uint8Array> | null): Promise<void> {
    try {
      if (input === null) await this.follow();
      else await this.consume(input);
      this.inputDone = true;
      for (const s of this.sessions) this.schedule(s);
      const linger = input === null ? 0 : this.options.lingerMs ?? 0;
      // Linger counts from the end of the stream, or the last connection after it.
      this.lastConnect = Date.now();
      for (;;) {
        await this.until(() => this.everyoneServed());
        const quiet = Date.now() - this.lastConnect;
        if (quiet >= linger) break;
        await this.until(() => false, linger - quiet);
      }
    } finally {
      await this.close();
    }
  }

  /** Whether every client has the whole stream so far (or is gone, or still saying hello). */
  private everyoneServed(): boolean {
    for (const s of this.sessions) if (s.state === 'waiting' || (s.state === 'live' && s.next < this.liveNext)) return false;
    return true;
  }

  /** Stops listening, finishes delivering what is queued, and closes every client. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // libuv removes the socket file once the listening handle is closed (not before: a new
    // broadcaster may already listen on the same path by then, and must not lose its file).
    const stopped = this.server.listening ? new Promise<void>((resolve) => this.server.close(() => resolve())) : Promise.resolve();
    await Promise.all(
      [...this.sessions].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.socket.destroyed) return resolve();
            s.socket.once('close', () => resolve());
            s.socket.end();
          }),
      ),
    );
    await stopped;
    for (const s of this.sessions) s.cursor?.close();
    this.writer?.close();
  }

  private openLog(follow: boolean): void {
    const dir = this.options.logDir;
    if (dir === undefined) {
      if (follow) throw new TfsError(ErrorCode.USAGE, 'no input stream: give the stream on stdin, or --log DIR to serve the log that a journal writes');
      return;
    }
    if (follow || FrameLogWriter.isWritten(dir)) {
      this.store = FrameLog.openReader(dir);
      this.log(`serving the log in ${dir}, which ${follow ? 'is followed to its end frame' : 'the journal writes (its --spool)'}`);
    } else {
      this.writer = FrameLogWriter.open(dir, { sync: this.options.sync, log: this.log, segmentBytes: segmentBytesFor(this.options.retain?.maxBytes) });
      this.store = this.writer;
    }
    if (this.store.header) this.onHeader(Buffer.from(this.store.header));
    this.liveNext = this.store.lastSeq + 1n;
  }

  /**
   * Reads the stream from the input. The log is opened once the first frame is in: a journal that
   * spools into the same DIR has opened it by then (it spools each frame before writing it out),
   * so `tfs-journal --spool D ... | tfs-broadcast --log D ...`, started together, agree on who writes.
   */
  private async consume(input: AsyncIterable<Uint8Array>): Promise<void> {
    const splitter = new FrameDecoder({ verify: false });
    let opened = false;
    for await (const chunk of input) {
      for (const frame of splitter.push(chunk)) {
        if (!opened) {
          this.openLog(false);
          opened = true;
        }
        const waiting = this.accept(frame);
        if (waiting) await waiting;
      }
    }
    splitter.end();
    if (!this.atEnd) throw new TfsError(ErrorCode.TRUNCATED, 'the input ended without an end frame');
  }

  /**
   * Follows a log written by another process until its end frame, and past it while the stream
   * goes on (a journal started again with its spool): it stops once the end frame is the last one,
   * every client has it, and nobody connected for the linger time.
   */
  private async follow(): Promise<void> {
    this.openLog(true);
    const store = this.store!;
    const dir = this.options.logDir!;
    const linger = this.options.lingerMs ?? 15_000;
    const watcher = fs.watch(dir, () => this.poke());
    const poll = setInterval(() => this.poke(), TAIL_POLL_MS);
    try {
      while (store.header === null) {
        await this.nap();
        store.refresh();
      }
      this.onHeader(Buffer.from(store.header));
      const last = store.lastSeq;
      if (last > 0n) this.atEnd = store.cursor(last).read(1)[0]?.type === FrameType.END;
      let endedAt = Date.now();
      const cursor = store.cursor(last + 1n);
      for (;;) {
        const frames = cursor.read();
        for (const frame of frames) {
          const waiting = this.accept(frame);
          if (waiting) await waiting;
        }
        if (frames.length > 0) {
          endedAt = Date.now();
          continue;
        }
        if (this.atEnd && this.everyoneServed() && Date.now() - Math.max(endedAt, this.lastConnect) >= linger) break;
        await this.nap();
        store.refresh();
      }
      cursor.close();
    } finally {
      watcher.close();
      clearInterval(poll);
    }
  }

  /** Takes one frame of the stream. Returns a promise only when the input must wait. */
  private accept(frame: Frame): Promise<void> | undefined {
    if (frame.type === FrameType.STREAM_HEADER) {
      this.onHeader(Buffer.from(frame.bytes));
      return;
    }
    if (this.header === null) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'the input does not begin with a stream header', { seq: frame.seq });
    if (this.writer) this.record(frame);
    if (frame.seq >= this.liveNext) this.atEnd = frame.type === FrameType.END;
    if (this.clientCount < this.minClients) return this.hold(frame);
    return this.take(frame);
  }

  private async hold(frame: Frame): Promise<void> {
    const copy = { ...frame, bytes: Buffer.from(frame.bytes) };
    await this.until(() => this.clientCount >= this.minClients);
    await this.take(copy);
  }

  /** Puts a frame in the window, making room first, and wakes the clients. */
  private take(frame: Frame): Promise<void> | undefined {
    if (frame.seq >= this.window.next || this.window.next === this.window.oldest) this.window.push(frame.seq, frame.bytes);
    if (frame.seq >= this.liveNext) this.liveNext = frame.seq + 1n;
    if (frame.type === FrameType.SNAPSHOT_BEGIN) this.snapshotBegins(frame);
    for (const s of this.sessions) if (s.state === 'live') this.schedule(s);
    if (!this.window.full) return;
    return this.makeRoom();
  }

  /** Drops the oldest frames of the window; without a log, only those no client still needs. */
  private async makeRoom(): Promise<void> {
    while (this.window.full) {
      if (this.store === null && this.needOldest().length > 0) {
        if (this.slowClient === SlowClientPolicy.WAIT) {
          await this.until(() => this.needOldest().length === 0);
        } else {
          await this.until(() => this.needOldest().length === 0, this.options.slowClientGraceMs ?? 2000);
          for (const s of this.needOldest()) {
            this.log(`client ${s.id} dropped: more than ${this.window.maxBytes} bytes behind for too long`);
            s.socket.destroy();
          }
        }
        continue;
      }
      this.window.evict();
    }
  }

  /** Clients that still need the oldest frame of the window. */
  private needOldest(): Session[] {
    return [...this.sessions].filter((s) => s.state === 'live' && !s.held && s.next <= this.window.oldest);
  }

  /**
   * A snapshot's begin frame passes: the clients waiting for that snapshot (its request token)
   * start at it. The only frame besides the header whose metadata a broadcaster reads.
   */
  private snapshotBegins(frame: Frame): void {
    let op;
    try {
      op = decodeOp(frame);
    } catch {
      return;
    }
    if (op.type !== FrameType.SNAPSHOT_BEGIN || op.request === undefined) return;
    for (const s of this.sessions) {
      if (s.held && s.bootstrap === 'snapshot' && s.request === op.request) {
        s.held = false;
        this.start(s, frame.seq);
      }
    }
  }

  /** Appends a frame to the log this broadcaster writes (a frame it holds already is skipped). */
  private record(frame: Frame): void {
    const w = this.writer!;
    if (frame.seq <= w.lastSeq) return;
    if (w.lastSeq !== 0n && frame.seq !== w.lastSeq + 1n) {
      throw new TfsError(ErrorCode.SEQUENCE_GAP, `the input jumps from #${w.lastSeq} to #${frame.seq}: the log in ${w.dir} would have a hole`, { seq: frame.seq });
    }
    w.append([frame.bytes]);
    if (++this.appendsSinceTrim >= 256 && this.options.retain) {
      this.appendsSinceTrim = 0;
      const trimmed = w.trim(this.options.retain);
      if (trimmed) this.log(`log retention: removed frames #${trimmed.fromSeq} to #${trimmed.toSeq} (${trimmed.bytes} bytes)`);
    }
  }

  private onHeader(header: Buffer): void {
    const op = decodeOp([...new FrameDecoder().push(header)][0]!);
    if (op.type !== FrameType.STREAM_HEADER) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'not a stream header');
    if (this.streamId !== null && op.streamId !== this.streamId) {
      throw new TfsError(ErrorCode.STREAM_MISMATCH, `the input is stream ${op.streamId}, the log in ${this.options.logDir} holds stream ${this.streamId}`);
    }
    if (this.header !== null) return;
    this.header = header;
    this.streamId = op.streamId;
    this.origin = op.origin;
    this.control = this.options.control ?? op.control;
    this.writer?.setHeader(header);
    for (const s of this.sessions) if (s.state === 'waiting') this.begin(s);
  }

  /**
   * A new client on any transport: it must say HELLO (at most 4 KiB) within the handshake time.
   * Past `maxClients`, it is refused with TFS_BUSY (a mirror retries later).
   */
  addClient(socket: Duplex, peer: string): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const session: Session = { id: this.nextSessionId++, socket, peer, hello: new FrameDecoder({ maxFrame: 4096 }), state: 'hello', next: 0n, scheduled: false };
    this.sessions.add(session);
    this.lastConnect = Date.now();
    this.log(`client ${session.id} connected from ${peer} (${this.sessions.size} now)`);
    if (this.sessions.size > this.maxClients) {
      this.refuse(session, ErrorCode.BUSY, `${this.maxClients} clients are connected already (--max-clients)`, 'Try again later, or raise tfs-broadcast --max-clients.');
    }
    session.handshake = setTimeout(() => {
      this.log(`client ${session.id} dropped: no HELLO within ${this.handshakeMs} ms`);
      socket.destroy();
    }, this.handshakeMs);
    socket.on('data', (chunk) => this.onClientData(session, chunk));
    socket.on('drain', () => this.schedule(session));
    socket.on('error', (err) => this.log(`client ${session.id}: ${err.message}`));
    socket.on('close', () => {
      clearTimeout(session.handshake);
      session.cursor?.close();
      this.sessions.delete(session);
      this.log(`client ${session.id} left (${this.sessions.size} now)`);
      // What the journal keeps for this client alone (a tracked copy, a snapshot not begun yet)
      // goes with it: the client starts over when it comes back.
      if (session.request !== undefined && this.control !== undefined && ((session.bootstrap === 'hold' && !session.requested) || session.held)) {
        const ctl = net.createConnection(this.control, () => ctl.end(JSON.stringify({ forget: session.request }) + '\n'));
        ctl.on('error', () => {});
      }
      this.poke();
    });
  }

  /**
   * Clients speak first with a HELLO frame (protocol version, where they stand, or a bootstrap
   * request), later perhaps with a REQUEST for the repair session of their copy.
   */
  private onClientData(session: Session, chunk: Buffer): void {
    try {
      for (const frame of session.hello.push(chunk)) {
        const op = decodeOp(frame);
        if (op.type === FrameType.REQUEST && session.state !== 'hello' && !session.requested) {
          // Only for the copy this connection's HELLO asked the journal to track, once.
          if (session.bootstrap !== 'hold' || op.repair !== session.request) throw new TfsError(ErrorCode.PEER, 'asked for the repair of a copy it did not announce');
          session.requested = true;
          this.askJournal(session, { repair: op.repair }, () => {});
          continue;
        }
        if (op.type !== FrameType.HELLO || session.state !== 'hello') throw new TfsError(ErrorCode.PEER, `sent a frame of type 0x${op.type.toString(16)} where it does not belong`);
        clearTimeout(session.handshake);
        if (op.version !== PROTOCOL_VERSION) return this.refuse(session, ErrorCode.UNSUPPORTED_VERSION, `the client reads protocol version ${op.version}, this stream is version ${PROTOCOL_VERSION}`);
        session.streamId = op.streamId;
        session.fromSeq = op.fromSeq;
        session.bootstrap = op.bootstrap;
        session.request = op.request;
        session.state = 'waiting';
        if (this.header !== null) this.begin(session);
      }
    } catch (err) {
      this.log(`client ${session.id} dropped: ${(err as Error).message}`);
      session.socket.destroy();
    }
  }

  /** The oldest frame a client can be served now (from the log, else from memory). */
  private oldest(): bigint {
    if (this.store) return this.store.firstSeq;
    return this.window.next === this.window.oldest ? this.liveNext : this.window.oldest;
  }

  /** Decides where a client starts, or refuses it; then sends the header and starts its pump. */
  private begin(session: Session): void {
    if (session.streamId !== undefined && session.streamId !== this.streamId) {
      return this.refuse(session, ErrorCode.STREAM_MISMATCH, `this broadcaster serves stream ${this.streamId}; the replica follows stream ${session.streamId}`, 'To follow this stream, the replica must start over: run tfs-mirror with --bootstrap (or --restart).');
    }
    this.store?.refresh();
    const wholeStream = this.oldest() <= 1n && this.origin !== 'changes';
    if ((session.bootstrap === 'snapshot' && !wholeStream) || session.bootstrap === 'hold') {
      // A snapshot of its own (or the tracking of its copy), from the journal: the client starts at
      // the snapshot's begin frame (seen in the input, or named in the journal's answer), or at the
      // frame a hold names. It holds nothing meanwhile: the journal must never wait for it to
      // answer (it may be blocked writing the very frames such a hold would keep the input from).
      session.next = this.liveNext;
      session.state = 'live';
      session.held = true;
      const request = session.bootstrap === 'hold' ? { hold: session.request } : { snapshot: 'full', request: session.request };
      return this.askJournal(session, request, (reply) => {
        // A snapshot's begin frame may have come through the input already (then it is started).
        if (!session.held) return;
        session.held = false;
        const from = BigInt((reply['begin'] ?? reply['from']) as string);
        if (from < this.oldest()) {
          return this.refuse(session, ErrorCode.HISTORY_GONE, `the stream moved on past #${from} before the journal's answer came (this broadcaster holds #${this.oldest()} on)`, 'Give the broadcaster a log (--log DIR), or a larger --client-buffer, and try again.');
        }
        this.start(session, from);
      });
    }
    let next: bigint;
    if (session.fromSeq !== undefined) next = session.fromSeq + 1n;
    else if (wholeStream) next = 1n; // the whole stream is here: the new replica needs nothing else
    else {
      return this.refuse(session, ErrorCode.HISTORY_GONE, `the replica is new, and this broadcaster no longer holds the stream's start (it keeps #${this.oldest()} on)`, 'Start the mirror with --bootstrap: it gets a snapshot of the store from the journal.');
    }
    // A replica that has the whole stream, which ended, gets its end frame again (it skips it), and so ends.
    if (this.atEnd && next >= this.liveNext) next = this.liveNext - 1n;
    if (next < this.oldest()) {
      const where = this.store ? `the log in ${this.options.logDir} keeps #${this.oldest()} on` : `this broadcaster keeps no log (--log) and holds #${this.oldest()} on in memory`;
      return this.refuse(session, ErrorCode.HISTORY_GONE, `the replica needs frames from #${next} on; ${where}`, 'The replica is too far behind to catch up here: bootstrap it again (tfs-mirror --bootstrap).');
    }
    this.start(session, next);
  }

  private start(session: Session, next: bigint): void {
    if (session.socket.destroyed) return;
    session.next = next;
    session.state = 'live';
    this.log(`client ${session.id} follows from #${next}${session.bootstrap ? ` (bootstrap: ${session.bootstrap})` : ''}`);
    session.socket.write(this.header!);
    this.schedule(session);
    this.poke();
  }

  /**
   * Sends one request to the journal's control socket (its path is in the stream header) and
   * calls back with the answer; a journal that cannot be asked refuses the client.
   */
  private askJournal(session: Session, request: Record<string, unknown>, then: (reply: Record<string, unknown>) => void): void {
    const refuse = (why: string) =>
      this.refuse(session, ErrorCode.HISTORY_GONE, `the journal cannot be asked for a snapshot: ${why}`, 'Run the broadcaster where the journal runs, or forward the journal\'s control socket to it (ssh -L LOCAL:REMOTE, tfs-broadcast --control LOCAL), or keep a log from the stream\'s start (tfs-broadcast --log, with a journal that began with a snapshot).');
    if (this.control === undefined) return refuse('its stream header names no control socket (tfs-journal --control)');
    const ctl = net.createConnection(this.control);
    let buffered = '';
    let settled = false;
    ctl.on('connect', () => ctl.write(JSON.stringify(request) + '\n'));
    ctl.on('data', (chunk) => {
      buffered += chunk.toString();
      const nl = buffered.indexOf('\n');
      if (nl < 0 || settled) return;
      settled = true;
      ctl.end();
      let reply: Record<string, unknown>;
      try {
        reply = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
      } catch {
        return refuse('its control socket answered nonsense');
      }
      if (typeof reply['error'] === 'string') return refuse(reply['error']);
      then(reply);
    });
    // Only an answer that never came is a refusal: not an error after it, nor one after the
    // client's snapshot began in the stream anyway.
    ctl.on('error', (err) => {
      if (settled || (session.bootstrap === 'snapshot' && !session.held)) return;
      settled = true;
      refuse(`${this.control}: ${err.message}`);
    });
    session.socket.once('close', () => ctl.destroy());
  }

  private refuse(session: Session, code: ErrorCode, message: string, hint?: string): void {
    this.log(`client ${session.id} (${session.peer}) refused: ${message} [${code}]`);
    const frame = new FrameEncoder(0n).encode(FrameType.ERROR, opMeta({ type: FrameType.ERROR, code, message, hint }));
    session.state = 'done';
    session.socket.end(Buffer.from(frame));
  }

  private schedule(session: Session): void {
    if (session.scheduled || session.state !== 'live') return;
    session.scheduled = true;
    setImmediate(() => {
      session.scheduled = false;
      this.pump(session);
    });
  }

  /** Sends a client what it lacks, from the window or the log, until its socket is full. */
  private pump(session: Session): void {
    if (session.state !== 'live' || session.held || session.socket.destroyed) return;
    const socket = session.socket;
    let sent = 0;
    socket.cork();
    try {
      while (session.next < this.liveNext && socket.writableLength < HIGH_WATER && sent < SLICE) {
        const frame = this.window.get(session.next);
        if (frame !== undefined) {
          session.cursor?.close();
          session.cursor = undefined;
          socket.write(frame);
          sent += frame.length;
          session.next++;
          continue;
        }
        const frames = this.fromLog(session);
        if (frames.length === 0) break;
        for (const f of frames) {
          socket.write(Buffer.from(f.bytes));
          sent += f.bytes.length;
        }
        session.next = session.cursor!.next;
      }
    } catch (err) {
      if (err instanceof TfsError && err.code === ErrorCode.HISTORY_GONE) {
        socket.uncork();
        return this.refuse(session, err.code, `the replica fell behind the log's retention: ${err.message}`, err.hint);
      }
      throw err;
    } finally {
      if (!socket.destroyed) socket.uncork();
    }
    if (this.inputDone && session.next >= this.liveNext) {
      session.state = 'done';
      socket.end();
      this.poke();
      return;
    }
    if (session.next < this.liveNext && socket.writableLength < HIGH_WATER) this.schedule(session);
    this.poke();
  }

  /** The next frames of a client from the log (read again when another process appended). */
  private fromLog(session: Session): Frame[] {
    if (this.store === null) return [];
    session.cursor ??= this.store.cursor(session.next);
    let frames = session.cursor.read(256 * 1024);
    if (frames.length === 0 && this.writer === null) {
      this.store.refresh();
      frames = session.cursor.read(256 * 1024);
    }
    return frames;
  }

  /** Waits until `condition` holds (re-checked whenever something moves), or `ms` pass. */
  private async until(condition: () => boolean, ms?: number): Promise<void> {
    const deadline = ms === undefined ? Infinity : Date.now() + ms;
    const timer = ms === undefined ? undefined : setTimeout(() => this.poke(), ms);
    try {
      while (!condition() && Date.now() < deadline) await this.nap();
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves at the next poke. */
  private nap(): Promise<void> {
    return new Promise<void>((resolve) => {
      const previous = this.wake;
      this.wake = () => {
        previous?.();
        resolve();
      };
    });
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

function isLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createConnection(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
