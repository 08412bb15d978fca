import net from 'node:net';
import { FrameEncoder } from '../shared/encoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, PROTOCOL_VERSION } from '../shared/frame';
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

/** The broadcaster at a UNIX socket, connected and greeted: yields the stream's chunks. */
export class SocketSource implements Source {
  private constructor(
    private readonly socket: net.Socket,
    private readonly socketPath: string,
  ) {}

  static async connect(socketPath: string, hello: Buffer): Promise<SocketSource> {
    const socket = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new TfsError(ErrorCode.PEER, `cannot connect to the broadcaster at ${socketPath}: ${err.message}`, { cause: err })));
    });
    socket.write(hello);
    return new SocketSource(socket, socketPath);
  }

  destroy(): void {
    this.socket.destroy(new Error('stopped'));
  }

  send(frame: Buffer): void {
    this.socket.write(frame);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of this.socket) yield chunk as Buffer;
    } catch (err) {
      throw new TfsError(ErrorCode.PEER, `the connection to ${this.socketPath} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      this.socket.destroy();
    }
  }
}
