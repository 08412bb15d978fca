import net from 'node:net';
import { FrameEncoder } from '../shared/encoder';
import { ErrorCode, TfsError } from '../shared/errors';
import { FrameType, PROTOCOL_VERSION } from '../shared/frame';
import { opMeta } from '../shared/ops';

/** The client handshake: the first frame a client sends to a broadcaster. */
export function helloFrame(streamId?: string, fromSeq?: bigint): Buffer {
  const meta = opMeta({ type: FrameType.HELLO, version: PROTOCOL_VERSION, streamId, fromSeq });
  return Buffer.from(new FrameEncoder(0n).encode(FrameType.HELLO, meta));
}

/** A stream of chunks that can be stopped from outside (the mirror's input). */
export interface Source extends AsyncIterable<Uint8Array> {
  /** Ends the input: iteration stops with an error. */
  destroy(): void;
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
