import fs from 'node:fs';
import { FrameEncoder } from '../shared/encoder';
import { OpInput, opMeta } from '../shared/ops';

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes frames to a file descriptor (the journal's stdout), synchronously and in call order.
 * A blocking write is the journal's backpressure: a slow reader throttles the filesystem.
 * If the reader goes away (EPIPE) the sink says so once, loudly, and drops every later frame,
 * so that the filesystem keeps working.
 */
export class FrameSink {
  private readonly encoder = new FrameEncoder(0n);
  private brokenBy: string | undefined;
  /** Frames that could not be delivered, or were not even built, since the reader went away. */
  dropped = 0;

  constructor(
    private readonly fd: number,
    private readonly log: (message: string) => void,
  ) {}

  /** Whether the reader went away (every later frame is dropped). */
  get broken(): boolean {
    return this.brokenBy !== undefined;
  }

  /** Counts a frame that the caller did not build because the reader is gone. */
  skip(): void {
    this.dropped++;
  }

  /** Emits one op; `data` (write contents, xattr value) is written from where it lies, never copied. */
  emit(op: OpInput, data?: Uint8Array): void {
    if (this.brokenBy !== undefined) {
      this.dropped++;
      return;
    }
    const meta = opMeta(op);
    if (data === undefined || data.length === 0) {
      this.writeAll([this.encoder.encode(op.type, meta, data)]);
    } else {
      const parts = this.encoder.encodeParts(op.type, meta, data);
      this.writeAll(parts.pad.length > 0 ? [parts.head, parts.data, parts.pad] : [parts.head, parts.data]);
    }
  }

  private writeAll(buffers: Uint8Array[]): void {
    let pending = buffers;
    for (;;) {
      let written: number;
      try {
        written = fs.writevSync(this.fd, pending);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          // stdout may have been left non-blocking by whoever shares it; wait for room.
          Atomics.wait(sleeper, 0, 0, 1);
          continue;
        }
        this.brokenBy = code ?? String(err);
        this.dropped++;
        this.log(`JOURNAL READER GONE (${this.brokenBy}): frames from #${this.encoder.seq - 1n} on are NOT being delivered; the filesystem keeps working`);
        return;
      }
      pending = skipBytes(pending, written);
      if (pending.length === 0) return;
    }
  }
}

function skipBytes(buffers: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < buffers.length && n >= buffers[i]!.length) n -= buffers[i++]!.length;
  if (i === buffers.length) return [];
  const rest = buffers.slice(i);
  rest[0] = rest[0]!.subarray(n);
  return rest;
}
