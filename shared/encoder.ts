import { Cap, FrameType, HEADER_SIZE, Offset, frameLength } from './frame';
import { frameChecksum } from './checksum';
import { packMeta } from './meta';
import { ErrorCode, TfsError } from './errors';

const ZEROS = Buffer.alloc(16);

/** A frame whose data is kept by reference: write `head`, then `data`, then `pad`. */
export interface FrameParts {
  head: Buffer;
  data: Uint8Array;
  pad: Buffer;
}

/**
 * Encodes frames with consecutive sequence numbers. Two passes: the metadata is packed and every
 * length known first, then header and metadata are written into one preallocated buffer.
 * The returned buffers are views into that buffer, valid until the next encode call.
 */
export class FrameEncoder {
  private nextSeq: bigint;
  private buffer = Buffer.allocUnsafe(64 * 1024);

  constructor(firstSeq = 0n) {
    this.nextSeq = firstSeq;
  }

  /** The sequence number the next frame will get. */
  get seq(): bigint {
    return this.nextSeq;
  }

  set seq(next: bigint) {
    this.nextSeq = next;
  }

  /** Encodes a whole frame (metadata and a copy of the data) into the shared buffer. */
  encode(type: FrameType, meta: unknown, data: Uint8Array = ZEROS.subarray(0, 0)): Buffer {
    const parts = this.encodeParts(type, meta, data, true);
    return parts.head;
  }

  /** Encodes header and metadata; the data stays where it is (no copy), for writev. */
  encodeParts(type: FrameType, meta: unknown, data: Uint8Array, copyData = false): FrameParts {
    const packed = meta === undefined ? ZEROS.subarray(0, 0) : packMeta(meta);
    if (packed.length > Cap.META) {
      throw new TfsError(ErrorCode.FRAME_TOO_LARGE, `metadata of ${packed.length} bytes exceeds ${Cap.META}`);
    }
    const length = frameLength(packed.length, data.length);
    if (length > Cap.FRAME) {
      throw new TfsError(ErrorCode.FRAME_TOO_LARGE, `frame of ${length} bytes exceeds ${Cap.FRAME}`);
    }
    const headLength = copyData ? length : HEADER_SIZE + packed.length;
    if (this.buffer.length < headLength) this.buffer = Buffer.allocUnsafe(Math.max(headLength, this.buffer.length * 2));
    const b = this.buffer;
    b.writeUInt32LE(length, Offset.LENGTH);
    b[Offset.TYPE] = type;
    b[Offset.FLAGS] = 0;
    b.writeUInt16LE(packed.length, Offset.META_LENGTH);
    b.writeBigUInt64LE(this.nextSeq, Offset.SEQ);
    b.writeUInt32LE(data.length, Offset.DATA_LENGTH);
    b.writeUInt32LE(0, Offset.RESERVED1);
    b.writeUInt32LE(0, Offset.RESERVED2);
    b.set(packed, HEADER_SIZE);
    b.writeUInt32LE(frameChecksum(b, packed, data), Offset.CHECKSUM);
    this.nextSeq++;
    const padLength = length - HEADER_SIZE - packed.length - data.length;
    if (copyData) {
      b.set(data, HEADER_SIZE + packed.length);
      b.fill(0, length - padLength, length);
      return { head: b.subarray(0, length), data: ZEROS.subarray(0, 0), pad: ZEROS.subarray(0, 0) };
    }
    return { head: b.subarray(0, headLength), data, pad: ZEROS.subarray(0, padLength) };
  }
}
