import Database from 'better-sqlite3';
import { ErrorCode, TfsError } from '../shared/errors';

/** Where a replica stands in a stream: the last applied frame, and the write handles open at that point. */
export interface Cursor {
  streamId: string | null;
  /** Sequence number of the last applied frame (0n before any). */
  seq: bigint;
  /** Open write handles: handle id → replica path, or null for a file whose name is gone. */
  handles: Map<number, string | null>;
  /** The snapshot session the replica is bootstrapping from (null: it follows the stream in full). */
  session: number | null;
  /** Set while a mirror runs (see `markRunning`): a run that stopped uncleanly left it behind. */
  running: { where: string; durable: boolean } | null;
}

/**
 * The replay cursor, kept in SQLite beside the replica. A commit records the cursor and the handle
 * table changes in one transaction, so a kill -9 at any moment leaves a cursor that matches
 * frames already applied (at most the frames since the previous commit are applied again).
 */
export class CursorStore {
  private readonly db: Database.Database;
  private readonly setCursor: Database.Statement;
  private readonly putHandle: Database.Statement;
  private readonly dropHandle: Database.Statement;
  private readonly commitTx: (seq: bigint, changes: Map<number, string | null | undefined>, session: number | null) => void;
  private streamId: string | null;

  /**
   * `durable`: every commit reaches the disk before it returns (synchronous = FULL). Otherwise a
   * process crash loses nothing committed, and a power cut may lose the last commits (as it may
   * lose the replica's own unsynced writes: the unclean-stop mark catches that).
   */
  constructor(file: string, durable = false) {
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(durable ? 'synchronous = FULL' : 'synchronous = NORMAL');
      this.db.defaultSafeIntegers(true);
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS cursor (one INTEGER PRIMARY KEY CHECK (one = 1), stream_id TEXT, seq INTEGER NOT NULL, session INTEGER);
        CREATE TABLE IF NOT EXISTS handles (handle INTEGER PRIMARY KEY, path TEXT);
        INSERT OR IGNORE INTO cursor (one, stream_id, seq) VALUES (1, NULL, 0);
      `);
      // Added after version 0.1: the unclean-stop mark, the snapshot session.
      const columns = (this.db.prepare('PRAGMA table_info(cursor)').all() as { name: string }[]).map((c) => c.name);
      if (!columns.includes('running')) this.db.exec('ALTER TABLE cursor ADD COLUMN running TEXT; ALTER TABLE cursor ADD COLUMN running_durable INTEGER');
      if (!columns.includes('session')) this.db.exec('ALTER TABLE cursor ADD COLUMN session INTEGER');
    } catch (err) {
      throw new TfsError(ErrorCode.STATE, `cannot open the cursor database ${file}: ${(err as Error).message}`, { cause: err });
    }
    this.setCursor = this.db.prepare('UPDATE cursor SET stream_id = ?, seq = ?, session = ? WHERE one = 1');
    this.putHandle = this.db.prepare('INSERT OR REPLACE INTO handles (handle, path) VALUES (?, ?)');
    this.dropHandle = this.db.prepare('DELETE FROM handles WHERE handle = ?');
    this.commitTx = this.db.transaction((seq: bigint, changes: Map<number, string | null | undefined>, session: number | null) => {
      for (const [handle, path] of changes) {
        if (path === undefined) this.dropHandle.run(handle);
        else this.putHandle.run(handle, path);
      }
      this.setCursor.run(this.streamId, seq, session === null ? null : BigInt(session));
    });
    this.streamId = this.load().streamId;
  }

  /** Reads the cursor as last committed. */
  load(): Cursor {
    const row = this.db.prepare('SELECT stream_id, seq, session, running, running_durable FROM cursor WHERE one = 1').get() as {
      stream_id: string | null;
      seq: bigint;
      session: bigint | null;
      running: string | null;
      running_durable: bigint | null;
    };
    const handles = new Map<number, string | null>();
    for (const h of this.db.prepare('SELECT handle, path FROM handles').all() as { handle: bigint; path: string | null }[]) {
      handles.set(Number(h.handle), h.path);
    }
    return { streamId: row.stream_id, seq: row.seq, handles, session: row.session === null ? null : Number(row.session), running: row.running === null ? null : { where: row.running, durable: row.running_durable === 1n } };
  }

  /** Starts following a stream from scratch (a new replica, or the user said to start over). */
  reset(streamId: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM handles').run();
      this.streamId = streamId;
      this.setCursor.run(streamId, 0n, null);
    })();
  }

  /**
   * Marks the replica as being written: `where` names this boot and this mount of the replica.
   * A clean stop clears it (`markStopped`); found set later, it means the last run did not stop
   * cleanly, and if `where` changed since (a reboot, a remount) its unsynced writes may be gone.
   */
  markRunning(where: string, durable: boolean): void {
    // The mark must be on disk before the replica is touched: this one commit is always synced.
    const mode = this.db.pragma('synchronous', { simple: true });
    this.db.pragma('synchronous = FULL');
    try {
      this.db.prepare('UPDATE cursor SET running = ?, running_durable = ? WHERE one = 1').run(where, durable ? 1n : 0n);
    } finally {
      this.db.pragma(`synchronous = ${mode}`);
    }
  }

  markStopped(): void {
    this.db.prepare('UPDATE cursor SET running = NULL, running_durable = NULL WHERE one = 1').run();
  }

  /**
   * Records that every frame up to `seq` is applied, with the handle changes since the last commit
   * (undefined = closed), and the snapshot session the replica is bootstrapping from (or null).
   */
  commit(seq: bigint, handleChanges: Map<number, string | null | undefined>, session: number | null): void {
    try {
      this.commitTx(seq, handleChanges, session);
    } catch (err) {
      throw new TfsError(ErrorCode.STATE, `cannot record the cursor at #${seq}: ${(err as Error).message}`, { cause: err });
    }
  }

  close(): void {
    this.db.close();
  }
}
