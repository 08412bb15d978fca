import fs from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { FrameDecoder } from '../shared/decoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, PROTOCOL_VERSION } from '../shared/frame';
import { decodeOp } from '../shared/ops';

/** What to do with a client that cannot keep up. */
export const SlowClientPolicy = {
  /** Hold the stream (and so throttle the journal) until it catches up. */
  WAIT: 'wait',
  /** Disconnect it if it stays behind for `slowClientGraceMs`; it resumes from its cursor later. */
  DISCONNECT: 'disconnect',
} as const;
export type SlowClientPolicy = (typeof SlowClientPolicy)[keyof typeof SlowClientPolicy];

export interface BroadcastOptions {
  socketPath: string;
  /** Hold the stream until this many clients are connected. */
  minClients?: number;
  /** Bytes queued for one client before the slow-client policy applies (default 8 MiB). */
  clientBuffer?: number;
  slowClient?: SlowClientPolicy;
  /** With DISCONNECT: how long a client may stay above `clientBuffer` (default 2000 ms). */
  slowClientGraceMs?: number;
  log?: (message: string) => void;
}

interface Client {
  id: number;
  socket: net.Socket;
  hello: FrameDecoder;
}

/**
 * A blind, in-order fan-out of frames from one input to every client of a UNIX socket.
 * Frames are split by their length alone; only the routing header's type byte is read, to keep
 * the stream header for late clients and to recognise the end. A client receives the stream
 * header, then every frame from the moment it connected. Every client's queue is bounded by
 * `clientBuffer`: past it, the input pauses (WAIT) or the client is dropped (DISCONNECT).
 */
export class Broadcaster {
  private readonly server = net.createServer();
  private readonly clients = new Set<Client>();
  private readonly log: (m: string) => void;
  private readonly clientBuffer: number;
  private readonly minClients: number;
  private readonly slowClient: SlowClientPolicy;
  private header: Buffer | null = null;
  private nextClientId = 1;
  private wake: (() => void) | null = null;
  private closed = false;

  constructor(private readonly options: BroadcastOptions) {
    this.log = options.log ?? (() => {});
    this.clientBuffer = options.clientBuffer ?? 8 * 1024 * 1024;
    this.minClients = options.minClients ?? 0;
    this.slowClient = options.slowClient ?? SlowClientPolicy.WAIT;
    this.server.on('connection', (socket) => this.accept(socket));
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.clients.size;
  }

  /** Starts listening; clears a socket file left by a dead broadcaster, refuses a live one. */
  async listen(): Promise<void> {
    const { socketPath } = this.options;
    if (fs.existsSync(socketPath)) {
      if (await isLive(socketPath)) throw new TfsError(ErrorCode.PEER, `another broadcaster is listening on ${socketPath}`);
      fs.unlinkSync(socketPath);
    }
    this.server.listen(socketPath);
    await once(this.server, 'listening');
  }

  /** Forwards the input to every client until it ends. Resolves after the end frame has been delivered. */
  async run(input: AsyncIterable<Uint8Array>): Promise<void> {
    const splitter = new FrameDecoder({ verify: false });
    let ended = false;
    try {
      for await (const chunk of input) {
        if (ended) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'input continues after the end frame');
        const frames = [...splitter.push(chunk)];
        if (frames.length === 0) continue;
        if (this.header === null) {
          const first = frames[0]!;
          if (first.type !== FrameType.STREAM_HEADER) throw new TfsError(ErrorCode.CORRUPT_FRAME, 'the input does not begin with a stream header', { seq: first.seq });
          this.header = Buffer.from(first.bytes);
          for (const c of this.clients) c.socket.write(this.header);
          frames.shift();
        }
        await this.until(() => this.clients.size >= this.minClients);
        // Frames of one chunk go out corked (one writev per client); after each frame the bound is
        // checked, so no client ever has more than clientBuffer + one frame queued.
        let corked = this.cork();
        for (const frame of frames) {
          for (const c of corked) c.socket.write(frame.bytes);
          if (frame.type === FrameType.END) ended = true;
          if (this.slowClients().length > 0) {
            this.uncork(corked);
            await this.applySlowClientPolicy();
            corked = this.cork();
          }
        }
        this.uncork(corked);
      }
      splitter.end();
      if (!ended) throw new TfsError(ErrorCode.TRUNCATED, 'the input ended without an end frame');
    } finally {
      await this.close();
    }
  }

  /** Stops listening, finishes delivering what is queued, and closes every client. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    try {
      fs.unlinkSync(this.options.socketPath);
    } catch {
      // already gone
    }
    await Promise.all([...this.clients].map((c) => new Promise<void>((resolve) => {
      c.socket.once('close', () => resolve());
      c.socket.end();
    })));
  }

  private accept(socket: net.Socket): void {
    const client: Client = { id: this.nextClientId++, socket, hello: new FrameDecoder({ maxFrame: 4096 }) };
    this.clients.add(client);
    this.log(`client ${client.id} connected (${this.clients.size} now)`);
    // The client joins now: it gets the header, then everything from here on.
    if (this.header) socket.write(this.header);
    socket.on('data', (chunk) => this.onClientData(client, chunk));
    socket.on('drain', () => this.poke());
    socket.on('error', (err) => this.log(`client ${client.id}: ${err.message}`));
    socket.on('close', () => {
      this.clients.delete(client);
      this.log(`client ${client.id} left (${this.clients.size} now)`);
      this.poke();
    });
    this.poke();
  }

  /** Clients speak once: a HELLO frame naming the protocol version they read. */
  private onClientData(client: Client, chunk: Buffer): void {
    try {
      for (const frame of client.hello.push(chunk)) {
        const op = decodeOp(frame);
        if (op.type !== FrameType.HELLO) throw new TfsError(ErrorCode.PEER, `sent a ${op.type} frame instead of HELLO`);
        if (op.version !== PROTOCOL_VERSION) throw new TfsError(ErrorCode.UNSUPPORTED_VERSION, `reads protocol version ${op.version}, this stream is ${PROTOCOL_VERSION}`);
      }
    } catch (err) {
      this.log(`client ${client.id} dropped: ${(err as Error).message}`);
      client.socket.destroy();
    }
  }

  private cork(): Client[] {
    const clients = [...this.clients];
    for (const c of clients) c.socket.cork();
    return clients;
  }

  private uncork(clients: Client[]): void {
    for (const c of clients) c.socket.uncork();
  }

  private slowClients(): Client[] {
    return [...this.clients].filter((c) => c.socket.writableLength > this.clientBuffer);
  }

  private async applySlowClientPolicy(): Promise<void> {
    if (this.slowClient === SlowClientPolicy.WAIT) return this.until(() => this.slowClients().length === 0);
    await this.until(() => this.slowClients().length === 0, this.options.slowClientGraceMs ?? 2000);
    for (const c of this.slowClients()) {
      this.log(`client ${c.id} dropped: more than ${this.clientBuffer} bytes behind for too long`);
      c.socket.destroy();
    }
  }

  /** Waits until `condition` holds (re-checked whenever a client drains, joins or leaves), or `ms` pass. */
  private async until(condition: () => boolean, ms?: number): Promise<void> {
    const timer = ms === undefined ? undefined : setTimeout(() => this.poke(), ms);
    const deadline = ms === undefined ? Infinity : Date.now() + ms;
    try {
      while (!condition() && Date.now() < deadline) await new Promise<void>((resolve) => (this.wake = resolve));
    } finally {
      clearTimeout(timer);
    }
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
