import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { once } from 'node:events';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { ErrorCode, TfsError } from '../shared/errors';
import { fromBearer, tokenMatches } from '../shared/auth';
import type { Broadcaster } from './server';

/** The WebSocket transport's limits and credentials (defaults in `WS_DEFAULTS`). */
export interface WsOptions {
  host: string;
  port: number;
  /** wss: the certificate chain and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  /** The shared token clients must present (Authorization: Bearer); none: anyone may connect. */
  token?: Buffer;
  /** New connections accepted per client address per minute (a burst of that many, then refilled). */
  ratePerMinute?: number;
  /** From TCP connect to the upgrade (TLS and HTTP handshakes); the HELLO then has its own time. */
  handshakeMs?: number;
  /** Bytes of HTTP request headers. */
  maxHeaderBytes?: number;
  /** Bytes of one message from a client (its HELLO and REQUEST frames are at most 4 KiB). */
  maxMessageBytes?: number;
  log?: (message: string) => void;
}

/** TCP connections at once, upgraded or not (past it the kernel's accepted ones are closed at once). */
const MAX_CONNECTIONS = 4096;

export const WS_DEFAULTS = {
  ratePerMinute: 60,
  handshakeMs: 10_000,
  maxHeaderBytes: 8192,
  maxMessageBytes: 65536,
} as const;

/**
 * Per-address token buckets: `perMinute` connections at once, refilled at `perMinute` a minute.
 * Full buckets are forgotten, so memory follows the addresses that connected in the last minute.
 */
class RateLimit {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly perMinute: number) {
    this.timer = setInterval(() => this.prune(), 60_000);
    this.timer.unref();
  }

  allow(address: string): boolean {
    const now = Date.now();
    const b = this.buckets.get(address) ?? { tokens: this.perMinute, at: now };
    b.tokens = Math.min(this.perMinute, b.tokens + ((now - b.at) / 60_000) * this.perMinute);
    b.at = now;
    this.buckets.set(address, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private prune(): void {
    const now = Date.now();
    for (const [a, b] of this.buckets) if (b.tokens + ((now - b.at) / 60_000) * this.perMinute >= this.perMinute) this.buckets.delete(a);
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/**
 * `tfs-broadcast --ws HOST:PORT`: clients over WebSocket (wss with `tls`), with the UNIX socket's
 * semantics exactly (each connection becomes a broadcaster client, as a byte stream: one frame per
 * binary message). Everything is checked before the upgrade, so a refused client gets an HTTP
 * status and not one frame: the connection rate of its address (429), its token (401), the number
 * of clients (503). A connection that has not upgraded within the handshake time is dropped.
 */
export class WsListener {
  private readonly server: http.Server;
  private readonly wss: WebSocketServer;
  private readonly rate: RateLimit;
  private readonly log: (m: string) => void;
  /** Upgrades accepted whose client is not handed to the broadcaster yet (they count against its cap). */
  private upgrading = 0;

  private constructor(
    private readonly broadcaster: Broadcaster,
    private readonly options: WsOptions,
  ) {
    this.log = options.log ?? (() => {});
    this.rate = new RateLimit(options.ratePerMinute ?? WS_DEFAULTS.ratePerMinute);
    const handshakeMs = options.handshakeMs ?? WS_DEFAULTS.handshakeMs;
    const serverOptions = { maxHeaderSize: options.maxHeaderBytes ?? WS_DEFAULTS.maxHeaderBytes };
    this.server = options.tls ? https.createServer({ ...serverOptions, ...options.tls, handshakeTimeout: handshakeMs }) : http.createServer(serverOptions);
    this.wss = new WebSocketServer({ noServer: true, maxPayload: options.maxMessageBytes ?? WS_DEFAULTS.maxMessageBytes, perMessageDeflate: false });
    // Every connection must upgrade within the handshake time: a client that connects and says
    // nothing, or says it slowly, is dropped. With TLS, the TLS handshake has its own bound
    // (handshakeTimeout), and the timer starts on the TLS socket, the one the upgrade then sees.
    this.server.maxConnections = MAX_CONNECTIONS;
    this.server.on(options.tls ? 'secureConnection' : 'connection', (socket: net.Socket) => {
      const timer = setTimeout(() => {
        this.log(`${peerOf(socket)} dropped: no WebSocket handshake within ${handshakeMs} ms`);
        socket.destroy();
      }, handshakeMs);
      socket.once('close', () => clearTimeout(timer));
      (socket as net.Socket & { tfsHandshake?: NodeJS.Timeout }).tfsHandshake = timer;
    });
    this.server.on('tlsClientError', (err, socket) => {
      this.log(`${peerOf(socket)} refused: TLS: ${err.message}`);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      this.log(`${peerOf(socket as net.Socket)} refused: ${status === 431 ? `handshake over ${serverOptions.maxHeaderSize} bytes` : err.message}`);
      if ((socket as net.Socket).writable) (socket as net.Socket).end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\n\r\n`);
      else socket.destroy();
    });
    this.server.on('request', (_req, res) => {
      res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' });
      res.end('tfs-broadcast speaks WebSocket only: connect with tfs-mirror --from ws://HOST:PORT/\n');
    });
    this.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.upgrade(req, socket, head));
  }

  /** Listens on HOST:PORT (PORT 0: any free port, see `address`). */
  static async start(broadcaster: Broadcaster, options: WsOptions): Promise<WsListener> {
    const l = new WsListener(broadcaster, options);
    l.server.listen(options.port, options.host);
    await Promise.race([
      once(l.server, 'listening'),
      once(l.server, 'error').then(([err]) => {
        throw new TfsError(ErrorCode.USAGE, `--ws ${options.host}:${options.port}: ${(err as Error).message}`);
      }),
    ]);
    return l;
  }

  /** Where it listens. */
  get address(): { host: string; port: number } {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const peer = peerOf(socket);
    // From the upgrade on, the HTTP server no longer watches this socket: a reset by the peer
    // must not become an unhandled error (it would take the broadcaster down).
    socket.on('error', (err) => this.log(`${peer}: ${err.message}`));
    const refuse = (status: number, why: string) => {
      this.log(`${peer} refused: ${why} (HTTP ${status})`);
      const body = `${why}\n`;
      // Closed once the answer is out, whether or not the peer closes its side (the handshake
      // timer, still running, closes it otherwise).
      socket.once('finish', () => socket.destroy());
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    };
    // The rate first: guessing tokens costs a connection each.
    if (!this.rate.allow(rateKey(socket.remoteAddress ?? '?'))) return refuse(429, `more than ${this.options.ratePerMinute ?? WS_DEFAULTS.ratePerMinute} connections a minute from this address`);
    if (this.options.token) {
      const given = fromBearer(req.headers.authorization);
      if (given === undefined) return refuse(401, 'no token (tfs-mirror --token-file)');
      if (!tokenMatches(this.options.token, given)) return refuse(401, 'wrong token');
    }
    if (this.broadcaster.connectionCount + this.upgrading >= this.broadcaster.maxClients) return refuse(503, `${this.broadcaster.maxClients} clients are connected already`);
    this.upgrading++;
    socket.once('close', () => this.upgrading > 0 && !handed && this.upgrading--);
    let handed = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      handed = true;
      this.upgrading--;
      clearTimeout((socket as net.Socket & { tfsHandshake?: NodeJS.Timeout }).tfsHandshake);
      const stream = createWebSocketStream(ws);
      // Errors of the WebSocket (a message over the cap, a protocol violation) end this client only.
      ws.on('error', (err) => this.log(`${peer}: ${err.message}`));
      this.broadcaster.addClient(stream, peer);
    });
  }

  /** Stops accepting and closes every connection still open. */
  async close(): Promise<void> {
    this.rate.close();
    for (const ws of this.wss.clients) ws.terminate();
    this.server.closeAllConnections?.();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Whom a connection rate is counted for: an IPv4 address (also when mapped into IPv6), this
 * machine as one (every 127.x.y.z and ::1), an IPv6 host by its /64 (one host gets a whole /64).
 */
export function rateKey(address: string): string {
  const a = address.replace(/^::ffff:/i, '');
  if (net.isIPv4(a)) return a.startsWith('127.') ? 'loopback' : a;
  if (a === '::1') return 'loopback';
  if (!net.isIPv6(a)) return a;
  // Expand "::" to the missing zero groups, then keep the first four.
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '').toLowerCase()).join(':')}::/64`;
}

function peerOf(socket: net.Socket): string {
  return socket.remoteAddress === undefined ? 'a client' : `${socket.remoteAddress}:${socket.remotePort}`;
}
