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

/** Connects to a broadcaster's UNIX socket, says hello, and yields the stream's chunks. */
export async function* socketSource(socketPath: string, hello: Buffer): AsyncGenerator<Buffer> {
  const socket = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (err) => reject(new TfsError(ErrorCode.PEER, `cannot connect to the broadcaster at ${socketPath}: ${err.message}`, { cause: err })));
  });
  socket.write(hello);
  try {
    for await (const chunk of socket) yield chunk as Buffer;
  } catch (err) {
    throw new TfsError(ErrorCode.PEER, `the connection to ${socketPath} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    socket.destroy();
  }
}
