import net from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { createWebSocketStream } from 'ws';
import { bearer } from '../shared/auth';
import { FrameEncoder } from '../shared/encoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { Cap, FrameType, PROTOCOL_VERSION } from '../shared/frame';
import { opMeta } from '../shared/ops';

/** The client handshake: the first frame a client sends to a broadcaster. */
export function helloFrame(streamId?: string, fromSeq?: bigint, bootstrap?: string, request?: string): Buffer {
  const meta = opMeta({ type: FrameType.HELLO, version: PROTOCOL_VERSION, streamId, fromSeq, bootstrap, request });
  return Buffer.from(new FrameEncoder(0n).encode(FrameType.HELLO, meta));
}

/** The client's request for the repair session of its copy (after a HELLO with bootstrap 'hold'). */
export function repairFrame(token: string): Buffer {
  return Buffer.from(new FrameEncoder(0n).encode(FrameType.REQUEST, opMeta({ type: FrameType.REQUEST, repair: token })));
}

/** A stream of chunks that can be stopped from outside (the mirror's input). */
export interface Source extends AsyncIterable<Uint8Array> {
  /** Ends the input: iteration stops with an error. */
  destroy(): void;
  /** Sends a frame to the other end (a broadcaster), where there is one. */
  send?(frame: Buffer): void;
}

/** Whether `--from` names a broadcaster over WebSocket (else it is a UNIX socket's path). */
export function isWebSocketUrl(from: string): boolean {
  return /^wss?:\/\//.test(from);
}

/** How to reach a broadcaster over WebSocket. */
export interface WsClientOptions {
  /** The shared token (sent as Authorization: Bearer). */
  token?: Buffer;
  /** Certificates to trust for wss:// (a private CA, or a self-signed certificate), PEM. */
  ca?: Buffer;
}

/** TLS errors that no retry can cure: the certificate is not one this mirror trusts. */
const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/;

/**
 * A broadcaster, connected and greeted: yields the stream's chunks. Over a UNIX socket the chunks
 * are the socket's; over WebSocket, its messages (whole frames, one per message).
 */
export class BroadcastSource implements Source {
  private constructor(
    private readonly stream: Duplex,
    private readonly where: string,
  ) {}

  /** `from` is a UNIX socket's path, or a ws:// or wss:// URL. */
  static connect(from: string, hello: Buffer, options: WsClientOptions = {}): Promise<BroadcastSource> {
    return isWebSocketUrl(from) ? BroadcastSource.connectWebSocket(from, hello, options) : BroadcastSource.connectUnix(from, hello);
  }

  static async connectUnix(socketPath: string, hello: Buffer): Promise<BroadcastSource> {
    const socket = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new TfsError(ErrorCode.PEER, `cannot connect to the broadcaster at ${socketPath}: ${err.message}`, { cause: err })));
    });
    socket.write(hello);
    return new BroadcastSource(socket, socketPath);
  }

  static async connectWebSocket(url: string, hello: Buffer, options: WsClientOptions): Promise<BroadcastSource> {
    const ws = new WebSocket(url, {
      headers: options.token ? { authorization: bearer(options.token) } : {},
      ca: options.ca,
      // A message holds one frame: 16 MiB at most.
      maxPayload: Cap.FRAME,
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d.slice(0, 512 - body.length)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const why = `the broadcaster at ${url} refused the connection: HTTP ${status}${body.trim() ? `: ${body.trim()}` : ''}`;
          if (status === 401) reject(new TfsError(ErrorCode.UNAUTHORIZED, why, { hint: 'Give the broadcaster\'s token with --token-file FILE.' }));
          else if (status === 429 || status === 503) reject(new TfsError(ErrorCode.BUSY, why));
          // A server error may pass (a proxy whose broadcaster restarts); anything else will not.
          else if (status >= 500) reject(new TfsError(ErrorCode.PEER, why));
          else reject(new TfsError(ErrorCode.WRONG_PEER, why, { hint: 'Check the URL: tfs-broadcast --ws answers at ws://HOST:PORT/ (wss:// with --tls-cert).' }));
        });
        res.on('error', () => reject(new TfsError(ErrorCode.PEER, `the broadcaster at ${url} refused the connection: HTTP ${res.statusCode}`)));
      });
      ws.once('error', (err: NodeJS.ErrnoException) => {
        if (CERT_ERRORS.test(err.code ?? '')) {
          reject(new TfsError(ErrorCode.UNAUTHORIZED, `the broadcaster at ${url} has a certificate this mirror does not trust: ${err.message}`, { hint: 'Give its CA (or its self-signed certificate) with --ca FILE.', cause: err }));
        } else if (err.code === 'EPROTO' || /^ERR_SSL_/.test(err.code ?? '')) {
          // OpenSSL's message: "...:SSL routines:FUNCTION:REASON:FILE:LINE:" on several lines.
          const parts = err.message.split(':');
          const at = parts.indexOf('SSL routines');
          const reason = at >= 0 && parts[at + 2] ? parts[at + 2] : err.message.split('\n')[0];
          reject(new TfsError(ErrorCode.WRONG_PEER, `the broadcaster at ${url} does not speak TLS as asked (${reason})`, { hint: 'wss:// needs tfs-broadcast --tls-cert/--tls-key; without them, use ws://.', cause: err }));
        } else reject(new TfsError(ErrorCode.PEER, `cannot connect to the broadcaster at ${url}: ${err.message}`, { cause: err }));
      });
    }).catch((err: unknown) => {
      ws.terminate();
      throw err;
    });
    const stream = createWebSocketStream(ws);
    stream.write(hello);
    return new BroadcastSource(stream, url);
  }

  destroy(): void {
    this.stream.destroy(new Error('stopped'));
  }

  send(frame: Buffer): void {
    this.stream.write(frame);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of this.stream) yield chunk as Buffer;
    } catch (err) {
      // A message over the frame cap, or one that breaks the WebSocket protocol: the broadcaster
      // is not to be trusted again by a retry.
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') throw new TfsError(ErrorCode.FRAME_TOO_LARGE, `${this.where} sent a message over ${Cap.FRAME} bytes`, { cause: err });
      if (code.startsWith('WS_ERR_')) throw new TfsError(ErrorCode.CORRUPT_FRAME, `${this.where} broke the WebSocket protocol: ${(err as Error).message}`, { cause: err });
      throw new TfsError(ErrorCode.PEER, `the connection to ${this.where} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      this.stream.destroy();
    }
  }
}
