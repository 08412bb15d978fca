/**
 * The most recent frames of the stream, in memory, by sequence number: clients that keep up are
 * served from here, without touching the disk. Bounded by bytes; the owner decides when the oldest
 * frame may go (`evict`), because a client may still need it.
 */
export class Window {
  private frames: Buffer[] = [];
  private head = 0;
  private first = 1n;
  private held = 0;

  constructor(readonly maxBytes: number) {}

  /** The oldest frame held (or `next` when empty). */
  get oldest(): bigint {
    return this.first;
  }

  /** The sequence number after the newest frame. */
  get next(): bigint {
    return this.first + BigInt(this.frames.length - this.head);
  }

  /** Bytes held. */
  get bytes(): number {
    return this.held;
  }

  /** Whether holding more would pass the bound (the oldest frame should go first). */
  get full(): boolean {
    return this.held > this.maxBytes && this.frames.length - this.head > 1;
  }

  /** Adds the frame after the newest (a copy: the caller's buffer may be reused). Restarts at `seq` after a gap. */
  push(seq: bigint, bytes: Uint8Array): void {
    if (seq !== this.next) this.clear(seq);
    this.frames.push(Buffer.from(bytes));
    this.held += bytes.length;
  }

  /** The frame `seq`, if held. */
  get(seq: bigint): Buffer | undefined {
    if (seq < this.first || seq >= this.next) return undefined;
    return this.frames[this.head + Number(seq - this.first)];
  }

  /** Drops the oldest frame. */
  evict(): void {
    const f = this.frames[this.head];
    if (f === undefined) return;
    this.held -= f.length;
    this.frames[this.head++] = undefined as unknown as Buffer;
    this.first++;
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head);
      this.head = 0;
    }
  }

  private clear(first: bigint): void {
    this.frames = [];
    this.head = 0;
    this.held = 0;
    this.first = first;
  }
}
