import { Frame, FrameType, frameTypeName } from './frame';
import { unpackMeta } from './meta';
import { checkPath } from './paths';
import { ErrorCode, TfsError } from './errors';

/** Access and modification time in nanoseconds since the epoch, as the store has them after the operation. */
export type Times = readonly [atimeNs: bigint, mtimeNs: bigint];

/** The process that made a change, for audit. */
export interface Caller {
  pid: number;
  uid: number;
  gid: number;
}

type Kind = 'path' | 'uint' | 'uints' | 'bigint' | 'times' | 'string' | 'bool' | 'caller';
interface Field {
  name: string;
  wire: string;
  kind: Kind;
  optional?: boolean;
}

const f = (name: string, wire: string, kind: Kind, optional = false): Field => ({ name, wire, kind, optional });
const path = f('path', 'p', 'path');
const handle = f('handle', 'h', 'uint');
const mode = f('mode', 'm', 'uint');
const uid = f('uid', 'u', 'uint');
const gid = f('gid', 'g', 'uint');
const times = f('times', 't', 'times');
const parentTimes = f('parentTimes', 'pt', 'times');

/**
 * The op table: for each frame type, the metadata fields it carries (name in code, key on the wire,
 * kind). Encoding, validation and tfs-inspect all read this one table.
 */
export const OP_FIELDS: Readonly<Record<number, readonly Field[]>> = {
  [FrameType.STREAM_HEADER]: [
    f('magic', 'magic', 'string'),
    f('version', 'v', 'uint'),
    f('streamId', 'id', 'string'),
    f('startNs', 't', 'bigint'),
    f('firstSeq', 'first', 'bigint'),
    f('origin', 'origin', 'string', true),
    f('control', 'ctl', 'string', true),
  ],
  [FrameType.END]: [f('reason', 'r', 'string')],
  [FrameType.HELLO]: [
    f('version', 'v', 'uint'),
    f('streamId', 'id', 'string', true),
    f('fromSeq', 'from', 'bigint', true),
    f('bootstrap', 'bs', 'string', true),
    f('request', 'req', 'string', true),
  ],
  [FrameType.ERROR]: [f('code', 'code', 'string'), f('message', 'm', 'string'), f('hint', 'hint', 'string', true)],
  [FrameType.REQUEST]: [f('repair', 'repair', 'string')],
  [FrameType.SNAPSHOT_BEGIN]: [f('id', 'id', 'uint'), f('full', 'full', 'bool'), f('request', 'req', 'string', true)],
  [FrameType.SNAPSHOT_END]: [f('id', 'id', 'uint'), f('nameless', 'nl', 'uints', true)],
  [FrameType.CREATE]: [path, mode, uid, gid, times, parentTimes],
  [FrameType.MKNOD]: [path, mode, f('rdev', 'rdev', 'uint'), uid, gid, times, parentTimes],
  [FrameType.MKDIR]: [path, mode, uid, gid, times, parentTimes],
  [FrameType.SYMLINK]: [path, f('target', 'target', 'string'), uid, gid, times, parentTimes],
  [FrameType.LINK]: [path, f('from', 'from', 'path'), parentTimes],
  [FrameType.UNLINK]: [path, parentTimes],
  [FrameType.RMDIR]: [path, parentTimes],
  [FrameType.RENAME]: [f('from', 'from', 'path'), path, f('flags', 'fl', 'uint'), times, f('fromParentTimes', 'fpt', 'times'), parentTimes],
  [FrameType.PURGE]: [path],
  [FrameType.OPEN]: [handle, path],
  [FrameType.WRITE]: [handle, f('offset', 'o', 'uint')],
  [FrameType.TRUNCATE]: [path, f('size', 's', 'uint'), times],
  [FrameType.FTRUNCATE]: [handle, f('size', 's', 'uint'), times],
  [FrameType.FSYNC]: [handle, f('datasync', 'ds', 'bool'), times],
  [FrameType.RELEASE]: [handle, times],
  [FrameType.FALLOCATE]: [handle, f('flags', 'fl', 'uint'), f('offset', 'o', 'uint'), f('length', 'len', 'uint'), times],
  [FrameType.CHMOD]: [path, mode],
  [FrameType.CHOWN]: [path, uid, gid, mode],
  [FrameType.UTIMENS]: [path, times],
  [FrameType.SETXATTR]: [path, f('name', 'n', 'string'), f('flags', 'fl', 'uint')],
  [FrameType.REMOVEXATTR]: [path, f('name', 'n', 'string')],
};

const callerField = f('caller', 'c', 'caller', true);
/** A frame of snapshot session `session`: only replicas bootstrapping from that session apply it. */
const sessionField = f('session', 'ss', 'uint', true);
/** A live frame that replicas bootstrapping from session `skipIn` must not apply (the snapshot brings its effect). */
const skipField = f('skipIn', 'sk', 'uint', true);
const TAGS = [callerField, sessionField, skipField];

/** What decodeOp reads for each frame type: its fields and the optional tags (built once). */
const DECODE_FIELDS = new Map<number, readonly Field[]>(Object.entries(OP_FIELDS).map(([type, fields]) => [Number(type), [...fields, ...TAGS]]));

interface Base { seq: bigint; caller?: Caller; session?: number; skipIn?: number }
/**
 * `origin`: what the stream's first frames bring a new replica: 'snapshot' (the store's content,
 * then its changes), 'empty' (the store was empty), 'changes' (changes only: replicas must already
 * equal the store). `control`: the journal's control socket (snapshots for late replicas).
 */
export type StreamHeader = Base & { type: typeof FrameType.STREAM_HEADER; magic: string; version: number; streamId: string; startNs: bigint; firstSeq: bigint; origin?: string; control?: string };
export type End = Base & { type: typeof FrameType.END; reason: string };
/** `bootstrap`: 'snapshot' (a full snapshot session for a new replica) or 'hold' (the journal tracks what changes until a repair). */
export type Hello = Base & { type: typeof FrameType.HELLO; version: number; streamId?: string; fromSeq?: bigint; bootstrap?: string; request?: string };
export type Refusal = Base & { type: typeof FrameType.ERROR; code: string; message: string; hint?: string };
export type Request = Base & { type: typeof FrameType.REQUEST; repair: string };
export type SnapshotBegin = Base & { type: typeof FrameType.SNAPSHOT_BEGIN; id: number; full: boolean; request?: string };
/** `nameless`: handles open on files that have no name (the session could not bring them): their frames change nothing a replica shows. */
export type SnapshotEnd = Base & { type: typeof FrameType.SNAPSHOT_END; id: number; nameless?: number[] };
type Owned = { path: string; uid: number; gid: number; times: Times; parentTimes: Times };
export type Op =
  | StreamHeader
  | End
  | Hello
  | Refusal
  | Request
  | SnapshotBegin
  | SnapshotEnd
  | (Base & { type: typeof FrameType.PURGE; path: string })
  | (Base & Owned & { type: typeof FrameType.CREATE; mode: number })
  | (Base & Owned & { type: typeof FrameType.MKNOD; mode: number; rdev: number })
  | (Base & Owned & { type: typeof FrameType.MKDIR; mode: number })
  | (Base & Owned & { type: typeof FrameType.SYMLINK; target: string })
  | (Base & { type: typeof FrameType.LINK; path: string; from: string; parentTimes: Times })
  | (Base & { type: typeof FrameType.UNLINK; path: string; parentTimes: Times })
  | (Base & { type: typeof FrameType.RMDIR; path: string; parentTimes: Times })
  | (Base & { type: typeof FrameType.RENAME; from: string; path: string; flags: number; times: Times; fromParentTimes: Times; parentTimes: Times })
  | (Base & { type: typeof FrameType.OPEN; handle: number; path: string })
  | (Base & { type: typeof FrameType.WRITE; handle: number; offset: number; data: Uint8Array })
  | (Base & { type: typeof FrameType.TRUNCATE; path: string; size: number; times: Times })
  | (Base & { type: typeof FrameType.FTRUNCATE; handle: number; size: number; times: Times })
  | (Base & { type: typeof FrameType.FSYNC; handle: number; datasync: boolean; times: Times })
  | (Base & { type: typeof FrameType.RELEASE; handle: number; times: Times })
  | (Base & { type: typeof FrameType.FALLOCATE; handle: number; flags: number; offset: number; length: number; times: Times })
  | (Base & { type: typeof FrameType.CHMOD; path: string; mode: number })
  | (Base & { type: typeof FrameType.CHOWN; path: string; uid: number; gid: number; mode: number })
  | (Base & { type: typeof FrameType.UTIMENS; path: string; times: Times })
  | (Base & { type: typeof FrameType.SETXATTR; path: string; name: string; flags: number; data: Uint8Array })
  | (Base & { type: typeof FrameType.REMOVEXATTR; path: string; name: string });

/** An op without the fields the encoder supplies. */
export type OpInput = Op extends infer O ? (O extends Op ? Omit<O, 'seq' | 'data'> : never) : never;

/**
 * Frame types that may name the tree's root itself (path ''): what a store's root can undergo
 * through the mount. Anything else on '' (RMDIR, RENAME, CREATE...) is hostile.
 */
export const ROOT_TYPES: ReadonlySet<number> = new Set([FrameType.CHMOD, FrameType.CHOWN, FrameType.UTIMENS, FrameType.SETXATTR, FrameType.REMOVEXATTR, FrameType.PURGE]);

/** Frame types that carry raw data after their metadata. */
export const DATA_TYPES: ReadonlySet<number> = new Set([FrameType.WRITE, FrameType.SETXATTR]);

/** Builds the wire metadata of an op from the op table. */
export function opMeta(op: OpInput): Record<string, unknown> {
  const fields = OP_FIELDS[op.type];
  if (!fields) throw new TfsError(ErrorCode.BAD_FRAME_FIELDS, `no such frame type ${op.type}`);
  const rec = op as unknown as Record<string, unknown>;
  const meta: Record<string, unknown> = {};
  for (const field of fields) {
    const v = rec[field.name];
    if (v !== undefined) meta[field.wire] = v;
  }
  if (op.caller) meta[callerField.wire] = [op.caller.pid, op.caller.uid, op.caller.gid];
  if (op.session !== undefined) meta[sessionField.wire] = op.session;
  if (op.skipIn !== undefined) meta[skipField.wire] = op.skipIn;
  return meta;
}

/** Decodes and validates a frame's metadata against the op table. Throws TfsError naming the frame. */
export function decodeOp(frame: Frame): Op {
  const fields = DECODE_FIELDS.get(frame.type);
  if (!fields) throw new TfsError(ErrorCode.CORRUPT_FRAME, `unknown frame type 0x${frame.type.toString(16)}`, { seq: frame.seq });
  const name = frameTypeName(frame.type)!;
  let meta: unknown;
  try {
    meta = frame.meta.length === 0 ? {} : unpackMeta(frame.meta);
  } catch (err) {
    throw new TfsError(ErrorCode.CORRUPT_FRAME, `${name}: metadata is not valid msgpack`, { seq: frame.seq, cause: err });
  }
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) {
    throw new TfsError(ErrorCode.BAD_FRAME_FIELDS, `${name}: metadata is not a map`, { seq: frame.seq });
  }
  const wire = meta as Record<string, unknown>;
  const op: Record<string, unknown> = { type: frame.type, seq: frame.seq };
  for (const field of fields) {
    const v = wire[field.wire];
    if (v === undefined || v === null) {
      if (field.optional) continue;
      throw new TfsError(ErrorCode.BAD_FRAME_FIELDS, `${name}: field '${field.wire}' (${field.name}) is missing`, { seq: frame.seq });
    }
    const value = convert(v, field, name, frame.seq);
    if (value === '' && field.kind === 'path' && !ROOT_TYPES.has(frame.type)) {
      throw new TfsError(ErrorCode.HOSTILE_PATH, `${name}: field '${field.wire}' names the tree's root itself, which a ${name} cannot change`, { seq: frame.seq });
    }
    op[field.name] = value;
  }
  if (DATA_TYPES.has(frame.type)) op['data'] = frame.data;
  else if (frame.data.length > 0) {
    throw new TfsError(ErrorCode.BAD_FRAME_FIELDS, `${name}: carries ${frame.data.length} data bytes but takes none`, { seq: frame.seq });
  }
  return op as unknown as Op;
}

function convert(v: unknown, field: Field, name: string, seq: bigint): unknown {
  const bad = (what: string) => new TfsError(ErrorCode.BAD_FRAME_FIELDS, `${name}: field '${field.wire}' ${what}`, { seq });
  switch (field.kind) {
    case 'path':
      if (typeof v !== 'string') throw bad('is not a string');
      return checkPath(v, seq);
    case 'string':
      if (typeof v !== 'string') throw bad('is not a string');
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad('is not a boolean');
      return v;
    case 'uint': {
      const n = typeof v === 'bigint' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw bad('is not an unsigned integer');
      return n;
    }
    case 'uints':
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw bad('is not a list of unsigned integers');
      return v;
    case 'bigint':
      if (typeof v === 'bigint') return v;
      if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
      throw bad('is not an integer');
    case 'times':
      if (!Array.isArray(v) || v.length !== 2) throw bad('is not a pair of times');
      return v.map((t) => {
        if (typeof t === 'bigint') return t;
        if (typeof t === 'number' && Number.isSafeInteger(t)) return BigInt(t);
        throw bad('holds a time that is not an integer');
      });
    case 'caller':
      if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw bad('is not [pid, uid, gid]');
      return { pid: v[0], uid: v[1], gid: v[2] };
  }
}
