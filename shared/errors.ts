/** Stable error codes, listed in the README. Each package throws TfsError with one of these. */
export const ErrorCode = {
  /** Bytes that are not a TFS frame: bad alignment, length, checksum, reserved bits, metadata. */
  CORRUPT_FRAME: 'TFS_CORRUPT_FRAME',
  /** A length field above its documented cap. */
  FRAME_TOO_LARGE: 'TFS_FRAME_TOO_LARGE',
  /** The input ended inside a frame, or without an end frame. */
  TRUNCATED: 'TFS_TRUNCATED',
  /** A stream header of a protocol version this build does not speak. */
  UNSUPPORTED_VERSION: 'TFS_UNSUPPORTED_VERSION',
  /** Sequence numbers that skip or go back within a stream. */
  SEQUENCE_GAP: 'TFS_SEQUENCE_GAP',
  /** A stream from another journal than the one the replica's cursor follows. */
  STREAM_MISMATCH: 'TFS_STREAM_MISMATCH',
  /** The frames a replica needs next are no longer retained anywhere it can reach: bootstrap it again. */
  HISTORY_GONE: 'TFS_HISTORY_GONE',
  /** A path that is absolute, climbs with "..", holds a NUL, is too long, or passes through a symlink. */
  HOSTILE_PATH: 'TFS_HOSTILE_PATH',
  /** A frame whose fields are missing or of the wrong type for its operation. */
  BAD_FRAME_FIELDS: 'TFS_BAD_FRAME_FIELDS',
  /** Applying a frame to the replica failed (the replica differs from what the stream expects). */
  APPLY_FAILED: 'TFS_APPLY_FAILED',
  /** A write handle that was never opened in this stream. */
  UNKNOWN_HANDLE: 'TFS_UNKNOWN_HANDLE',
  /** Wrong command-line usage. */
  USAGE: 'TFS_USAGE',
  /** Refusing to write binary frames to a terminal. */
  TTY_OUTPUT: 'TFS_TTY_OUTPUT',
  /** Refusing to read binary frames from a terminal. */
  TTY_INPUT: 'TFS_TTY_INPUT',
  /** A frame asks for something this mirror does not do without a flag saying so (device nodes). */
  REFUSED: 'TFS_REFUSED',
  /** Changes made on the store were not delivered to the journal's reader (it went away). */
  NOT_DELIVERED: 'TFS_NOT_DELIVERED',
  /** A mirror's last run did not stop cleanly and the machine or mount changed since: the replica cannot be trusted. */
  UNCLEAN_STOP: 'TFS_UNCLEAN_STOP',
  /** The store changed while no journal was mounted: the spooled stream cannot go on. */
  STORE_CHANGED: 'TFS_STORE_CHANGED',
  /** The mount could not be set up (mountpoint busy, store missing, FUSE unavailable). */
  MOUNT_FAILED: 'TFS_MOUNT_FAILED',
  /** A peer (socket, client, broadcaster) misbehaved or went away. */
  PEER: 'TFS_PEER',
  /** A client without the right token (WebSocket transport): refused before any frame, never retried. */
  UNAUTHORIZED: 'TFS_UNAUTHORIZED',
  /** The address answers, but not as a TFS broadcaster of that transport (an HTTP 404, TLS against plain WebSocket): never retried. */
  WRONG_PEER: 'TFS_WRONG_PEER',
  /** A limit of the broadcaster was reached (clients, connection rate): the client retries later. */
  BUSY: 'TFS_BUSY',
  /** The cursor database could not be opened or written. */
  STATE: 'TFS_STATE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The one error class of TFS: a stable `code`, and where known the sequence number of the frame at fault. */
export class TfsError extends Error {
  readonly code: ErrorCode;
  readonly seq: bigint | undefined;
  /** What the user can do about it, printed on the lines after the message. */
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { seq?: bigint; cause?: unknown; hint?: string } = {}) {
    super(options.seq === undefined ? message : `frame #${options.seq}: ${message}`, { cause: options.cause });
    this.name = 'TfsError';
    this.code = code;
    this.seq = options.seq;
    this.hint = options.hint;
  }
}

/** Process exit codes shared by the commands. */
export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  /** The input stream was corrupt, truncated, hostile or from the wrong journal. */
  BAD_STREAM: 3,
} as const;

/** Maps an error to the exit code a command should end with. */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof TfsError)) return ExitCode.FAILURE;
  switch (err.code) {
    case ErrorCode.USAGE:
    case ErrorCode.TTY_OUTPUT:
    case ErrorCode.TTY_INPUT:
      return ExitCode.USAGE;
    case ErrorCode.CORRUPT_FRAME:
    case ErrorCode.FRAME_TOO_LARGE:
    case ErrorCode.TRUNCATED:
    case ErrorCode.UNSUPPORTED_VERSION:
    case ErrorCode.SEQUENCE_GAP:
    case ErrorCode.STREAM_MISMATCH:
    case ErrorCode.HISTORY_GONE:
    case ErrorCode.HOSTILE_PATH:
    case ErrorCode.BAD_FRAME_FIELDS:
    case ErrorCode.UNKNOWN_HANDLE:
    case ErrorCode.REFUSED:
      return ExitCode.BAD_STREAM;
    default:
      return ExitCode.FAILURE;
  }
}
