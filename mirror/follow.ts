import { ErrorCode, TfsError } from '../shared/errors';
import { Mirror, MirrorResult } from './mirror';
import { Source } from './source';

export interface FollowOptions {
  /** Failed attempts in a row before giving up (0: never give up). */
  maxAttempts?: number;
  /** The first wait between attempts, doubled after each failure (default 100 ms). */
  firstDelayMs?: number;
  /** The longest wait between attempts (default 10000 ms). */
  maxDelayMs?: number;
  log?: (message: string) => void;
}

/**
 * Errors that a new connection may cure: the broadcaster went away, the connection was cut (in
 * the middle of a frame, too), or it is busy (too many clients, too many connections). Everything
 * else (a refusal, another stream, history no longer retained, a corrupt or hostile frame, a
 * replica that cannot take a frame) stops the mirror.
 */
function retriable(err: unknown): boolean {
  return err instanceof TfsError && (err.code === ErrorCode.PEER || err.code === ErrorCode.TRUNCATED || err.code === ErrorCode.BUSY);
}

/**
 * Follows a broadcaster until the stream's end frame, reconnecting whenever the connection goes
 * away: each connection says HELLO with the replica's stream and cursor, so it resumes right after
 * the last frame applied. Waits grow from `firstDelayMs` to `maxDelayMs` (doubling), one line per
 * attempt; a successful connection that brought frames resets them.
 */
export class Follower {
  private source: Source | undefined;
  private stopped = false;
  private sleeping: (() => void) | undefined;

  constructor(
    private readonly mirror: Mirror,
    private readonly connect: (hello: Buffer) => Promise<Source>,
    private readonly options: FollowOptions = {},
  ) {}

  async run(): Promise<MirrorResult> {
    const log = this.options.log ?? (() => {});
    const first = this.options.firstDelayMs ?? 100;
    const max = this.options.maxDelayMs ?? 10_000;
    let failures = 0;
    try {
      for (;;) {
        if (this.stopped) throw new TfsError(ErrorCode.PEER, 'stopped');
        const before = this.mirror.position;
        let why: string;
        try {
          this.source = await this.connect(this.mirror.hello());
          if ((await this.mirror.apply(this.source)) === 'end') return this.mirror.result();
          why = 'the broadcaster closed the connection before the end of the stream';
        } catch (err) {
          if (this.stopped || !retriable(err)) throw err;
          why = (err as Error).message;
        } finally {
          this.source?.destroy();
          this.source = undefined;
        }
        if (this.mirror.mustStartOver) {
          throw new TfsError(ErrorCode.PEER, `${why}, while the copy ran: what changed meanwhile can no longer all be known`, { hint: 'Run the same command again: the copy starts over.' });
        }
        if (this.mirror.position > before) failures = 0;
        failures++;
        const limit = this.options.maxAttempts ?? 0;
        if (limit > 0 && failures > limit) {
          throw new TfsError(ErrorCode.PEER, `gave up after ${limit} attempts in a row: ${why}`, { hint: 'Run the same command again once the broadcaster is back: the replica resumes from its cursor.' });
        }
        const delay = Math.min(max, first * 2 ** Math.min(failures - 1, 30));
        log(`${why}; at #${this.mirror.position}, reconnecting in ${delay} ms (attempt ${failures}${limit > 0 ? ` of ${limit}` : ''})`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.sleeping = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.sleeping = undefined;
      }
    } finally {
      this.mirror.close();
    }
  }

  /** Sends a frame to the broadcaster over the connection in hand; false when there is none. */
  send(frame: Buffer): boolean {
    if (this.source?.send === undefined) return false;
    this.source.send(frame);
    return true;
  }

  /** Stops following: the connection in hand is closed, no new one is made. */
  stop(): void {
    this.stopped = true;
    this.source?.destroy();
    this.sleeping?.();
  }
}
