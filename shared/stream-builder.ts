import { FrameEncoder } from './encoder';
import { FrameType, MAGIC, PROTOCOL_VERSION } from './frame';
import { OpInput, opMeta } from './ops';

/** Builds a stream in memory (tests, benchmarks): the header, then ops with consecutive numbers, then the end. */
export class StreamBuilder {
  private readonly encoder = new FrameEncoder(0n);
  private readonly frames: Buffer[] = [];

  constructor(readonly streamId = 'test-stream') {
    this.add({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId, startNs: 0n, firstSeq: 1n });
  }

  add(op: OpInput, data?: Uint8Array): this {
    this.frames.push(Buffer.from(this.encoder.encode(op.type, opMeta(op), data)));
    return this;
  }

  end(): this {
    return this.add({ type: FrameType.END, reason: 'test' });
  }

  /** Each frame's bytes. */
  get list(): Buffer[] {
    return this.frames;
  }

  bytes(): Buffer {
    return Buffer.concat(this.frames);
  }
}
