import { Frame, FrameType, frameTypeName } from '../shared/frame';
import { decodeOp, Op } from '../shared/ops';

const FILE_TYPES: Record<number, string> = { 0o010000: 'fifo', 0o020000: 'chr', 0o040000: 'dir', 0o060000: 'blk', 0o100000: 'file', 0o120000: 'link', 0o140000: 'sock' };

/** A mode as type and octal permissions: 'file 0644'. */
export function formatMode(mode: number): string {
  const type = FILE_TYPES[mode & 0o170000];
  const perm = (mode & 0o7777).toString(8).padStart(4, '0');
  return type ? `${type} ${perm}` : perm;
}

/** Nanoseconds since the epoch as an ISO time with nine fractional digits. */
export function formatTime(ns: bigint): string {
  const ms = ns / 1000000n;
  const iso = new Date(Number(ms)).toISOString();
  return iso.slice(0, 19) + '.' + (((ns % 1000000000n) + 1000000000n) % 1000000000n).toString().padStart(9, '0') + 'Z';
}

/**
 * Describes the frames of one stream, in order. It follows the stream's open handles (OPEN names
 * a handle's file; renames and unlinks change or remove that name) so that frames which carry only
 * a handle (WRITE, FTRUNCATE, FSYNC, RELEASE, FALLOCATE) also show the file they change, as `file`.
 */
export class Inspector {
  private readonly handles = new Map<number, string | null>();

  /** One human-readable line: sequence number, operation, then its fields. */
  describe(frame: Frame): string {
    const op = this.follow(decodeOp(frame));
    const parts: string[] = [`#${op.seq}`, (frameTypeName(op.type) ?? '?').padEnd(11)];
    for (const [key, value] of Object.entries(op)) {
      if (key === 'seq' || key === 'type') continue;
      parts.push(`${key}=${formatValue(key, value)}`);
    }
    return parts.join(' ');
  }

  /** The frame as a JSON-ready object: BigInts become strings, data becomes its length. */
  toJson(frame: Frame): Record<string, unknown> {
    const op = this.follow(decodeOp(frame));
    const out: Record<string, unknown> = { op: frameTypeName(op.type) };
    for (const [key, value] of Object.entries(op)) {
      if (key === 'type') continue;
      if (value instanceof Uint8Array) out[key === 'data' ? 'dataLength' : key] = value.length;
      else out[key] = JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
    }
    return out;
  }

  /** Updates the handle table with an op; returns the op with `file` added to handle frames. */
  private follow(op: Op): Op {
    switch (op.type) {
      case FrameType.OPEN:
        this.handles.set(op.handle, op.path);
        return op;
      case FrameType.UNLINK:
        for (const [h, p] of this.handles) if (p === op.path) this.handles.set(h, null);
        return op;
      case FrameType.RENAME:
        for (const [h, p] of this.handles) {
          if (p === op.path && op.path !== op.from) this.handles.set(h, null);
          else if (p !== null && (p === op.from || p.startsWith(op.from + '/'))) this.handles.set(h, op.path + p.slice(op.from.length));
        }
        return op;
      case FrameType.WRITE:
      case FrameType.FTRUNCATE:
      case FrameType.FSYNC:
      case FrameType.FALLOCATE:
      case FrameType.RELEASE: {
        const file = this.handles.get(op.handle);
        if (op.type === FrameType.RELEASE) this.handles.delete(op.handle);
        // Insert `file` right after `handle` for readability.
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(op)) {
          out[k] = v;
          if (k === 'handle') out['file'] = file === undefined ? '(opened before this stream part)' : file ?? '(name removed)';
        }
        return out as unknown as Op;
      }
      default:
        return op;
    }
  }
}

function formatValue(key: string, value: unknown): string {
  if (key === 'mode' && typeof value === 'number') return formatMode(value);
  if (key === 'data' && value instanceof Uint8Array) return `${value.length}B`;
  if (key === 'caller' && typeof value === 'object' && value !== null) {
    const c = value as { pid: number; uid: number; gid: number };
    return `pid:${c.pid},uid:${c.uid},gid:${c.gid}`;
  }
  if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'bigint') return `a:${formatTime(value[0])},m:${formatTime(value[1] as bigint)}`;
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}
