import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileType, S_IFDIR } from '../shared/tree';
import { ordered } from './order';
import { Snapshot, SnapshotHost, inodeKey } from './snapshot';

/** Milliseconds of walking per turn of the event loop: FUSE requests wait at most this long. */
const STEP_MS = 4;

interface Waiter {
  resolve: (begun: { session: number; begin: bigint }) => void;
  reject: (err: Error) => void;
  /** A repair: the tracker whose paths it repairs (tracked until the session begins), else a full session. */
  repair: Tracker | null;
  request?: string;
}

/** Paths (and nameless files, by inode) changed since a replica began its own copy. */
interface Tracker {
  paths: Set<string>;
  inodes: Set<string>;
}

/**
 * The journal's snapshot sessions, one at a time, asked for by the journal itself (the first sync)
 * or by clients through the control socket; and the trackers of replicas that copy the store by
 * other means (`--bootstrap-with`), whose repair session covers every path changed meanwhile.
 */
export class Sessions {
  active: Snapshot | null = null;
  private readonly waiting: Waiter[] = [];
  private current: Waiter | null = null;
  private readonly trackers = new Map<string, Tracker>();
  private nextId = 1;
  private scheduled = false;
  private closed = false;
  private lastProgress = 0;

  constructor(
    /** `modeChanged`: whether a session runs or a copy is tracked may have changed (called in the store order). */
    private readonly host: SnapshotHost & { emitted(): bigint; modeChanged(): void },
    private readonly log: (m: string) => void,
  ) {}

  /** Whether some replica's copy is being tracked. */
  get tracking(): boolean {
    return this.trackers.size > 0;
  }

  /** Starts a full session (now or after the one running). Resolves when its first frame is out. */
  full(request?: string): Promise<{ session: number; begin: bigint }> {
    return this.enqueue({ repair: null, request });
  }

  /** Starts tracking changes for a replica that is about to copy the store; returns the first frame it must not miss. */
  hold(token: string): bigint {
    return ordered(() => {
      this.trackers.set(token, { paths: new Set(), inodes: new Set() });
      this.host.modeChanged();
      return this.host.emitted() + 1n;
    });
  }

  /** The replica `token` finished its copy: a repair session of everything changed since its hold. */
  repair(token: string): Promise<{ session: number; begin: bigint }> | null {
    const t = this.trackers.get(token);
    if (t === undefined) return null;
    // The tracker goes on until the session begins: nothing that changes meanwhile escapes it.
    return this.enqueue({ repair: t, request: token });
  }

  /**
   * A live change touched these paths, and the entry with inode `key`: all of that inode's names
   * are repaired when it has several (`several`), or when the change named none (a file whose last
   * name is gone may still have one elsewhere).
   */
  touched(paths: (string | null | undefined)[], key?: string, several = false): void {
    for (const t of this.trackers.values()) {
      let named = false;
      for (const p of paths) {
        if (typeof p === 'string') {
          t.paths.add(p);
          named = true;
        }
      }
      if (key !== undefined && (several || !named)) t.inodes.add(key);
    }
  }

  /**
   * The client `token` went away before it needed what was kept for it: its tracker, and its
   * snapshot if that has not begun, are dropped (a replica that comes back starts over).
   */
  forget(token: string): void {
    ordered(() => {
      this.trackers.delete(token);
      this.host.modeChanged();
    });
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const w = this.waiting[i]!;
      if (w.request !== token) continue;
      this.waiting.splice(i, 1);
      w.reject(new Error('its client went away'));
    }
  }

  close(): void {
    ordered(() => {
      this.closed = true;
      this.active?.close();
      this.active = null;
      this.host.modeChanged();
    });
  }

  private enqueue(w: Omit<Waiter, 'resolve' | 'reject'>): Promise<{ session: number; begin: bigint }> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ ...w, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.turn();
    });
  }

  /**
   * One turn of the walk (about `budgetMs` of it; 0: one entry or one chunk); a new session when
   * none runs and one is asked for. Runs by itself between FUSE requests; tests call it directly.
   * Returns false when there is no session to run.
   */
  turn(budgetMs = STEP_MS): boolean {
    // The walk reads the store and emits frames: nothing may write the store meanwhile.
    return ordered(() => {
      const ran = this.turnInOrder(budgetMs);
      this.host.modeChanged();
      return ran;
    });
  }

  private turnInOrder(budgetMs: number): boolean {
    if (this.closed) return false;
    if (this.active === null) {
      const next = this.waiting.shift();
      if (next === undefined) return false;
      this.current = next;
      let paths: string[] | null = null;
      try {
        if (next.repair !== null) {
          for (const [token, t] of this.trackers) if (t === next.repair) this.trackers.delete(token);
          // Files open through the mount are repaired too, whether or not they changed: the copy's
          // replica never saw their handles' OPEN frames, and the session announces them again.
          const inodes = new Set(next.repair.inodes);
          for (const f of this.host.announcedFiles()) inodes.add(f.key);
          paths = this.allNames([...next.repair.paths], inodes);
        }
        // Made and begun in this same turn: no change can come between the tracker's end and the begin frame.
        this.active = new Snapshot(this.host, this.nextId++, paths, next.request);
      } catch (err) {
        return this.failed(null, err);
      }
      this.log(`snapshot ${this.active.id} begins: ${paths === null ? 'the whole store' : `${paths.length} paths to repair`}${next.request ? ` (for ${next.request})` : ''}`);
    }
    const s = this.active;
    let done: boolean;
    try {
      done = s.step(budgetMs);
    } catch (err) {
      return this.failed(s, err);
    }
    if (this.current) {
      // The session's begin frame is out: whoever asked can be pointed at it.
      this.current.resolve({ session: s.id, begin: s.beginSeq });
      this.current = null;
    }
    const now = Date.now();
    if (done || now - this.lastProgress > 5000) {
      this.lastProgress = now;
      this.log(`snapshot ${s.id}${done ? ' done' : ''}: ${s.entries} entries, ${(s.bytes / 1048576).toFixed(1)} MiB`);
    }
    if (done) this.active = null;
    this.schedule();
    return true;
  }

  /**
   * A session could not be made or go on (the store answered an error): it is said loudly, whoever
   * asked for it is told, and the queue goes on. The mount itself is never affected.
   */
  private failed(s: Snapshot | null, err: unknown): true {
    this.log(`SNAPSHOT ${s?.id ?? 'start'} FAILED: ${(err as Error).stack}: replicas bootstrapping from it will not end`);
    s?.close();
    this.active = null;
    this.current?.reject(err as Error);
    this.current = null;
    this.schedule();
    return true;
  }

  /**
   * The paths to repair: those given, and every name of a file that has one among them, or that is
   * named by inode. A copy holds a file's names as one file: repairing only some of them would split
   * it. Names are found by a scan of the store, only when such files exist.
   */
  private allNames(paths: string[], inodes: Set<string>): string[] {
    const tree = this.host.tree;
    const wanted = new Set(inodes);
    for (const p of paths) for (const [, st] of tree.walk(p)) if (fileType(st.mode) !== S_IFDIR && st.nlink > 1) wanted.add(inodeKey(st));
    if (wanted.size === 0) return paths;
    // Their current names: a scan of the store.
    const found = [...paths];
    for (const [rel, st] of tree.walk('')) if (wanted.has(inodeKey(st))) found.push(rel);
    return found;
  }
}

/**
 * Where the control socket of a journal lives by default: a private directory of this user
 * (TFS_RUNTIME_DIR overrides it; the test command points it at its own temporary directory).
 */
export function defaultControlPath(streamId: string): string {
  const uid = process.geteuid?.() ?? 0;
  const base = process.env['TFS_RUNTIME_DIR'] ?? (uid === 0 ? '/run/tfs' : path.join(process.env['XDG_RUNTIME_DIR'] ?? `/tmp/tfs-${uid}`, 'tfs'));
  return path.join(base, `journal-${streamId.slice(0, 16)}.sock`);
}

/**
 * The journal's control socket (mode 0600 in a 0700 directory): one JSON request a line, one
 * answer a line. {"snapshot":"full","request":TOKEN} -> {"session":N,"begin":"SEQ"} once the
 * session's first frame is out; {"hold":TOKEN} -> {"from":"SEQ"}; {"repair":TOKEN} ->
 * {"session":N,"begin":"SEQ"}; {"forget":TOKEN} -> {"forgotten":TOKEN} (the client went away).
 * Anything else -> {"error":"..."}.
 */
export class ControlServer {
  private readonly server: net.Server;

  private constructor(
    readonly socketPath: string,
    sessions: Sessions,
    log: (m: string) => void,
  ) {
    this.server = net.createServer((socket) => {
      let buffered = '';
      socket.on('error', () => {});
      socket.on('data', (chunk) => {
        buffered += chunk.toString();
        if (buffered.length > 65536) return socket.destroy();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          void answer(line).then(
            (reply) => socket.write(JSON.stringify(reply) + '\n'),
            (err: Error) => socket.write(JSON.stringify({ error: `the snapshot failed: ${err.message}` }) + '\n'),
          );
        }
      });
    });
    const answer = async (line: string): Promise<Record<string, unknown>> => {
      let req: Record<string, unknown>;
      try {
        req = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return { error: 'not JSON' };
      }
      const begun = (b: { session: number; begin: bigint }) => ({ session: b.session, begin: b.begin.toString() });
      if (req['snapshot'] === 'full') {
        log(`control: a full snapshot asked for${typeof req['request'] === 'string' ? ` by ${req['request']}` : ''}`);
        return begun(await sessions.full(typeof req['request'] === 'string' ? req['request'] : undefined));
      }
      if (typeof req['hold'] === 'string') return { from: sessions.hold(req['hold']).toString() };
      if (typeof req['forget'] === 'string') {
        sessions.forget(req['forget']);
        return { forgotten: req['forget'] };
      }
      if (typeof req['repair'] === 'string') {
        const r = sessions.repair(req['repair']);
        return r === null ? { error: `nothing held for ${req['repair']}` } : begun(await r);
      }
      return { error: 'unknown request' };
    };
  }

  static async listen(socketPath: string, sessions: Sessions, log: (m: string) => void): Promise<ControlServer> {
    const dir = path.dirname(socketPath);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    // The directory keeps others out of the socket: it must be ours and closed to others (a
    // directory another user made first, under /tmp, would let them in or take the socket).
    const st = fs.lstatSync(dir);
    if (!st.isDirectory() || st.uid !== process.geteuid?.() || (st.mode & 0o077) !== 0) {
      throw new Error(`${dir} must be a directory of this user that others cannot enter (mode 0700)`);
    }
    try {
      fs.unlinkSync(socketPath);
    } catch {
      // none left behind
    }
    const c = new ControlServer(socketPath, sessions, log);
    const umask = process.umask(0o177);
    try {
      c.server.listen(socketPath);
    } finally {
      process.umask(umask);
    }
    await new Promise<void>((resolve, reject) => {
      c.server.once('listening', resolve);
      c.server.once('error', reject);
    });
    return c;
  }

  close(): void {
    this.server.close();
  }
}
