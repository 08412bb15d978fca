import { Cap, Frame, HEADER_SIZE, Offset, ROUTING_HEADER_SIZE, ALIGN } from './frame';
import { contiguousChecksum } from './checksum';
import { ErrorCode, TfsError } from './errors';

export interface DecoderOptions {
  /** Verify checksums, reserved fields and padding (default true). A blind router turns this off. */
  verify?: boolean;
  /** Largest frame accepted, at most Cap.FRAME. */
  maxFrame?: number;
}

/**
 * Incremental frame decoder: a state machine fed chunks of any size. A frame that lies inside one
 * chunk is returned as a view of it; only a frame that spans chunks is copied, into a buffer of
 * exactly its length. Every length is checked against a cap before anything is allocated.
 */
export class FrameDecoder {
  private readonly verify: boolean;
  private readonly maxFrame: number;
  private readonly head = Buffer.alloc(ROUTING_HEADER_SIZE);
  private headFill = 0;
  private partial: Buffer | null = null;
  private partialFill = 0;
  /** Bytes consumed so far, for error messages. */
  private offset = 0;

  constructor(options: DecoderOptions = {}) {
    this.verify = options.verify ?? true;
    this.maxFrame = Math.min(options.maxFrame ?? Cap.FRAME, Cap.FRAME);
  }

  /** True when no partial frame is pending. */
  get idle(): boolean {
    return this.headFill === 0 && this.partial === null;
  }

  /** Feeds a chunk; yields every frame it completes, in order. Throws TfsError on bad input. */
  *push(chunk: Uint8Array): Generator<Frame> {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.partial === null) {
        if (this.headFill === 0 && chunk.length - pos >= ROUTING_HEADER_SIZE) {
          const length = this.checkLength(chunk, pos);
          if (chunk.length - pos >= length) {
            const frame = this.finish(chunk.subarray(pos, pos + length));
            pos += length;
            this.offset += length;
            yield frame;
            continue;
          }
          this.partial = Buffer.allocUnsafe(length);
          this.partialFill = 0;
        } else {
          const n = Math.min(ROUTING_HEADER_SIZE - this.headFill, chunk.length - pos);
          this.head.set(chunk.subarray(pos, pos + n), this.headFill);
          this.headFill += n;
          pos += n;
          if (this.headFill < ROUTING_HEADER_SIZE) continue;
          const length = this.checkLength(this.head, 0);
          this.partial = Buffer.allocUnsafe(length);
          this.partial.set(this.head, 0);
          this.partialFill = ROUTING_HEADER_SIZE;
          this.headFill = 0;
        }
      }
      const n = Math.min(this.partial.length - this.partialFill, chunk.length - pos);
      this.partial.set(chunk.subarray(pos, pos + n), this.partialFill);
      this.partialFill += n;
      pos += n;
      if (this.partialFill === this.partial.length) {
        const whole = this.partial;
        this.partial = null;
        const frame = this.finish(whole);
        this.offset += whole.length;
        yield frame;
      }
    }
  }

  /** Declares the end of input; throws if it fell inside a frame. */
  end(): void {
    if (!this.idle) {
      const have = this.partial ? this.partialFill : this.headFill;
      const want = this.partial ? `${this.partial.length}` : `at least ${ROUTING_HEADER_SIZE}`;
      throw new TfsError(ErrorCode.TRUNCATED, `input ends inside a frame at byte ${this.offset}: ${have} of ${want} bytes`);
    }
  }

  private checkLength(b: Uint8Array, at: number): number {
    const length = readU32(b, at + Offset.LENGTH);
    if (length > this.maxFrame) {
      throw new TfsError(ErrorCode.FRAME_TOO_LARGE, `frame at byte ${this.offset} declares ${length} bytes, above the cap of ${this.maxFrame}`);
    }
    if (length < HEADER_SIZE || length % ALIGN !== 0) {
      throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame at byte ${this.offset} declares length ${length}: not a multiple of ${ALIGN} of at least ${HEADER_SIZE}`);
    }
    return length;
  }

  private finish(bytes: Uint8Array): Frame {
    const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    const seq = view.readBigUInt64LE(Offset.SEQ);
    const metaLength = view.readUInt16LE(Offset.META_LENGTH);
    const dataLength = view.readUInt32LE(Offset.DATA_LENGTH);
    const end = HEADER_SIZE + metaLength + dataLength;
    if (end > view.length || view.length - end >= ALIGN) {
      throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame at byte ${this.offset}: metadata ${metaLength} + data ${dataLength} bytes do not fit length ${view.length}`, { seq });
    }
    if (this.verify) {
      const stored = view.readUInt32LE(Offset.CHECKSUM);
      const actual = contiguousChecksum(view, metaLength, dataLength);
      if (stored !== actual) {
        throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame at byte ${this.offset}: checksum ${hex(stored)} but content gives ${hex(actual)}`, { seq });
      }
      if (view[Offset.FLAGS] !== 0 || view.readUInt32LE(Offset.RESERVED1) !== 0 || view.readUInt32LE(Offset.RESERVED2) !== 0) {
        throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame at byte ${this.offset}: reserved bits set`, { seq });
      }
      for (let i = end; i < view.length; i++) {
        if (view[i] !== 0) throw new TfsError(ErrorCode.CORRUPT_FRAME, `frame at byte ${this.offset}: non-zero padding`, { seq });
      }
    }
    return {
      type: view[Offset.TYPE]!,
      flags: view[Offset.FLAGS]!,
      seq,
      meta: view.subarray(HEADER_SIZE, HEADER_SIZE + metaLength),
      data: view.subarray(HEADER_SIZE + metaLength, end),
      bytes: view,
    };
  }
}

function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
}

function hex(n: number): string {
  return '0x' + n.toString(16).padStart(8, '0');
}
