/**
 * The embedded runtime's durable state: one SQLite file (`<out>/state.db`) holding the five stage
 * queues and their DLQs, the once-store, the audit trail, terminal outcomes, claim-check blobs and
 * the `process` command's submissions. See docs/DURABILITY.md for why SQLite, why this driver and
 * why these pragmas.
 *
 * - WAL journal: readers (`itk3 trace`, `dlq list`, `GET /messages/<id>`) never block the writer.
 * - `synchronous = FULL`: every commit fsyncs the WAL, so a commit that returned survives power
 *   loss, not only a process crash. NORMAL would lose the last commits on power loss, and a lost
 *   commit here is a 202 that was already answered.
 * - One connection, one writer: units of work (see lib/runtime/state.ts) are plain transactions.
 *
 * Every statement is synchronous (better-sqlite3), so a queue operation and its audit event run
 * back to back with no interleaving inside the process.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  type ChainLink,
  type CheckpointKeys,
  type CheckpointPolicy,
  type CheckpointSigner,
  DEFAULT_CHECKPOINT_POLICY,
  genesisHash,
  linkHash,
  type StoredCheckpoint,
  type StreamReport,
  signCheckpoint,
  verifyStream,
} from '../../audit/chain.js';
import { AUDIT_TABLE } from '../../infra/definitions.js';
import {
  type AuditEntry,
  type Clock,
  type OnceStore,
  onceMarker,
  safeAuditEntry,
} from '../../ports/index.js';
import { freezeRecord, type PipelineRecord, serialiseRecord } from '../../record.js';
import { lazyBody, type QueuedMessage, type QueueSettings } from '../../runtime/memory-queue.js';
import type {
  Backlog,
  InspectableAuditLog,
  RuntimeState,
  StageQueue,
  StoredOutcome,
} from '../../runtime/state.js';

/** The state file cannot be written (disk full, read-only, I/O error): the runtime must stop. */
export class StateWriteError extends Error {
  override readonly name = 'StateWriteError';
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  queue TEXT NOT NULL,
  trace_id TEXT NOT NULL,
  attributes TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  sent_at INTEGER NOT NULL,
  receive_count INTEGER NOT NULL DEFAULT 0,
  first_received_at INTEGER,
  visible_at INTEGER NOT NULL,
  receipt_handle TEXT,
  last_failure TEXT,
  dead_source TEXT,
  dead_reason TEXT,
  dead_at INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, visible_at, seq);
-- Bodies apart from the queue bookkeeping: SQLite rewrites a whole record on UPDATE, and a receive
-- (count, visibility, receipt handle) must not rewrite a 200 KB body.
CREATE TABLE IF NOT EXISTS message_bodies (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS once_keys (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
-- The audit trail is one hash chain (docs/AUDIT.md): seq is the entry's position in the stream, prev
-- the hash of the entry before it, hash this entry's; audit_checkpoints holds the signed heads.
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT NOT NULL, entry TEXT NOT NULL, prev TEXT, hash TEXT);
CREATE INDEX IF NOT EXISTS audit_by_trace ON audit (trace_id, seq);
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_checkpoints (n INTEGER PRIMARY KEY, jws TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, bytes BLOB NOT NULL, size INTEGER NOT NULL, trace_id TEXT);
CREATE INDEX IF NOT EXISTS blobs_by_trace ON blobs (trace_id);
CREATE TABLE IF NOT EXISTS outcomes (trace_id TEXT PRIMARY KEY, outcome TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS submissions (key TEXT PRIMARY KEY, trace_id TEXT NOT NULL, file TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS submissions_by_trace ON submissions (trace_id);
CREATE TABLE IF NOT EXISTS sync_marker (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
-- serve's per-sender share of the backlog (docs/SECURITY.md, "The HTTP listener"): who a submission
-- is charged to and for how many bytes, written in the commit that accepts it, kept until its trace
-- is finished (through a dead letter, which a redrive may bring back), so a start counts it again.
CREATE TABLE IF NOT EXISTS admissions (trace_id TEXT PRIMARY KEY, party TEXT NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID;
-- Bodies stored once (format 1): a large body (the sealed JWE of an inbound message) is a body part,
-- referred to by the messages whose bodies contain it: the inbound message (template '') and the
-- records of the next hops, which carry it inline. A spliced message's body is its template with
-- the part's text inserted at \`at\` (UTF-16 code units); it has no message_bodies row. A part goes
-- with the last splice that refers to it (no reference count: an UPDATE would rewrite the text).
-- The key is random, never reused, so a key remembered across a rolled-back unit of work cannot
-- point at another body.
CREATE TABLE IF NOT EXISTS body_parts (key TEXT PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS message_splices (seq INTEGER PRIMARY KEY, template TEXT NOT NULL, part TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS message_splices_by_part ON message_splices (part);
`;

/**
 * The layout of the state file (PRAGMA user_version). 0: before bodies were stored once; it opens
 * as is (its messages all have message_bodies rows) and is marked 1. A file marked higher was
 * written by a newer version, whose messages this one might not read: it is refused.
 */
const STATE_FORMAT = 1;

/** A body at least this long is stored as a body part, so the next hops can refer to it. */
const BODY_PART_MIN_CHARS = 8 * 1024;

/** At most this many characters of body parts are remembered in memory for reuse by later hops. */
const PARTS_MAX_CHARS = 64 * 1024 * 1024;

/** What a body is read from: its own row, or a template and a body part. */
const BODY_SOURCE = {
  columns: 'b.body AS body, s.template AS template, s.at AS at, p.key AS part_key, p.text AS part_text',
  joins:
    'LEFT JOIN message_bodies b ON b.seq = m.seq LEFT JOIN message_splices s ON s.seq = m.seq LEFT JOIN body_parts p ON p.key = s.part',
};
/** A file of format 0 opened read-only (so without the tables of format 1). */
const LEGACY_BODY_SOURCE = {
  columns: 'b.body AS body, NULL AS template, NULL AS at, NULL AS part_key, NULL AS part_text',
  joins: 'LEFT JOIN message_bodies b ON b.seq = m.seq',
};
interface BodyColumns {
  body: string | null;
  template: string | null;
  at: number | null;
  part_key: string | null;
  part_text: string | null;
}

/** A record on its way to the next stage's first receive, and how to rebuild its stored body. */
interface HandOff {
  record: PipelineRecord;
  /** Roughly what it holds in memory (for the bound). */
  chars: number;
  body: () => string;
}

/** A body part this process knows the text of. */
interface KnownPart {
  key: string;
  text: string;
  bytes: number;
  /** Whether JSON.stringify leaves the text as it is (checked once, when first spliced). */
  plain?: boolean;
}

/** Marks where the shared part goes in a record's serialisation; random per process. */
const PART_MARK = `part-${randomUUID()}-part`;
/** A character JSON.stringify would escape (or a lone surrogate, which it writes as \u escape). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what JSON escapes
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * The record's serialisation without its sealed JWE, and where the JWE goes: the record with a
 * mark in place of `sealed.inline`, serialised, and the mark cut out (it occurs exactly once).
 */
function spliceTemplate(
  record: PipelineRecord,
): { template: string; at: number; templateBytes: number } | undefined {
  const marked = serialiseRecord({ ...record, sealed: { inline: PART_MARK } });
  const at = marked.indexOf(PART_MARK);
  if (at < 0 || marked.indexOf(PART_MARK, at + 1) >= 0) return undefined;
  const template = marked.slice(0, at) + marked.slice(at + PART_MARK.length);
  return { template, at, templateBytes: Buffer.byteLength(template, 'utf8') };
}

/**
 * At most this much (in characters of their serialisation) of handed-over records is kept in memory
 * between stages; beyond it, records are read back from the file and parsed.
 */
const HAND_OFF_MAX_CHARS = 32 * 1024 * 1024;

interface MessageRow {
  seq: number;
  id: string;
  trace_id: string;
  queue: string;
  body: string;
  attributes: string;
  bytes: number;
  sent_at: number;
  receive_count: number;
  first_received_at: number | null;
  visible_at: number;
  receipt_handle: string | null;
  last_failure: string | null;
  dead_source: string | null;
  dead_reason: string | null;
  dead_at: number | null;
}

export interface SqliteStateOptions {
  clock: Clock;
  /** Open an existing file only to read it (operator commands while a server runs). */
  readonly?: boolean;
}

export class SqliteState implements RuntimeState {
  readonly durable = true;
  readonly file: string;
  readonly db: Database.Database;
  readonly audit: SqliteAuditLog;
  readonly once: SqliteOnceStore;
  readonly blobs: SqliteBlobStore;
  readonly #clock: Clock;
  readonly #queues = new Map<string, SqliteQueue>();
  readonly #statements = new Map<string, Database.Statement>();
  readonly #backlog: Backlog = { messages: 0, bytes: 0 };
  #inTransaction = false;
  #holds = 0;
  #commitScheduled = false;
  #waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  #failed: StateWriteError | undefined;
  #synchronous: 'NORMAL' | 'FULL' = 'FULL';
  /** Characters of bodies the queues hold in memory for the in-process hand-off. */
  #handOffChars = 0;
  /** Body parts whose text this process knows, by trace: what a later hop may refer to. */
  readonly #parts = new Map<string, KnownPart>();
  #partChars = 0;
  /** @internal How this file's message bodies are selected (`m` is the messages table). */
  readonly bodySource: { columns: string; joins: string };

  constructor(file: string, opts: SqliteStateOptions) {
    this.file = file;
    this.#clock = opts.clock;
    try {
      if (!opts.readonly) mkdirSync(dirname(file), { recursive: true });
      const fresh = !existsSync(file);
      this.db = new Database(file, opts.readonly ? { readonly: true, fileMustExist: true } : {});
      const format = this.db.pragma('user_version', { simple: true }) as number;
      if (format > STATE_FORMAT) {
        this.db.close();
        throw new StateWriteError(
          'STATE_FORMAT',
          `the state file ${file} was written by a newer version of itk3 (format ${format}; this version reads up to ${STATE_FORMAT}): finish its work with that version, or use another --out folder`,
        );
      }
      // Read-only, a file of the previous layout is read as it is (every body in message_bodies).
      this.bodySource = opts.readonly && format < STATE_FORMAT ? LEGACY_BODY_SOURCE : BODY_SOURCE;
      if (!opts.readonly) {
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = FULL');
        this.db.pragma('foreign_keys = ON');
        this.db.exec(SCHEMA);
        migrateAuditChain(this.db);
        if (format < STATE_FORMAT) this.db.pragma(`user_version = ${STATE_FORMAT}`);
        // The file holds credentials and message content, like an SQS queue at rest.
        if (fresh) chmodSync(file, 0o600);
      }
      this.db.pragma('busy_timeout = 5000');
      // A read-only open succeeds even where the file cannot be read (WAL index missing on a
      // read-only folder): read once now, so that surfaces here with a clear message.
      this.db.prepare('SELECT count(*) FROM sqlite_master').get();
    } catch (cause) {
      if (cause instanceof StateWriteError) throw cause;
      throw stateError(cause, `cannot open the state file ${file}`);
    }
    this.audit = new SqliteAuditLog(this, this.#clock);
    this.once = new SqliteOnceStore(this, this.#clock);
    this.blobs = new SqliteBlobStore(this);
    if (!opts.readonly) this.#recountBacklog();
  }

  /** A prepared statement, prepared once per connection. */
  stmt(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  queue(settings: QueueSettings): StageQueue {
    let q = this.#queues.get(settings.name);
    if (!q) {
      q = new SqliteQueue(this, settings, this.#clock);
      this.#queues.set(settings.name, q);
    }
    return q;
  }

  // ---- units of work -------------------------------------------------------------------------

  run<T>(fn: () => T): T {
    this.#open();
    // No savepoint here (it costs two statements per port call): a statement that fails is undone
    // by SQLite on its own, and an I/O failure stops the state and rolls the whole unit back.
    let value: T;
    try {
      value = fn();
    } catch (error) {
      if (isIoError(error)) throw this.#fail(error, 'cannot write to the state file');
      throw error;
    }
    if (this.#holds === 0) this.#scheduleCommit();
    return value;
  }

  write<T>(fn: () => T): Promise<T> {
    let value: T;
    try {
      value = this.run(fn);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<T>((resolve, reject) => {
      this.#waiters.push({ resolve: () => resolve(value), reject });
    });
  }

  transact<T>(fn: () => T, opts: { survivesCrashOnly?: boolean } = {}): T {
    this.#open(opts.survivesCrashOnly === true);
    const value = this.#savepoint(fn);
    if (this.#holds === 0) this.commit();
    return value;
  }

  hold(): void {
    // A handler's unit of work needs to survive a crash of the process, not a power loss: on power
    // loss SQLite keeps a consistent prefix of the commits that always includes every accepted
    // submission (those commits are full), and the lost handler work simply runs again.
    this.#open(true);
    this.#holds += 1;
  }

  release(): void {
    this.#holds = Math.max(0, this.#holds - 1);
    if (this.#holds === 0) this.commit();
  }

  /** Commit whatever is open now and tell the writers waiting on it. */
  commit(): void {
    if (!this.#inTransaction) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    try {
      this.stmt('COMMIT').run();
      this.#inTransaction = false;
      if (waiters.length > 0 && this.#synchronous !== 'FULL') this.#syncWal();
    } catch (cause) {
      const error = this.#fail(cause, 'cannot commit to the state file');
      for (const w of waiters) w.reject(error);
      throw error;
    }
    for (const w of waiters) w.resolve();
  }

  /** The error that stopped this state, if any: after it, every write is refused. */
  get failure(): StateWriteError | undefined {
    return this.#failed;
  }

  /**
   * Open a transaction unless one is open. `crashSafeOnly`: its commit may skip the fsync
   * (synchronous=NORMAL, which SQLite only lets us switch outside a transaction). Such a commit
   * survives `kill -9` (the OS has the WAL frames) and becomes power-safe with the next full commit;
   * a writer waiting for durability (an accepted submission) that joined it gets an explicit sync.
   */
  #open(crashSafeOnly = false): void {
    if (this.#failed) throw this.#failed;
    if (this.#inTransaction) return;
    try {
      this.#setSynchronous(crashSafeOnly ? 'NORMAL' : 'FULL');
      this.stmt('BEGIN IMMEDIATE').run();
    } catch (cause) {
      throw this.#fail(cause, 'cannot start a transaction on the state file');
    }
    this.#inTransaction = true;
  }

  #setSynchronous(level: 'NORMAL' | 'FULL'): void {
    if (this.#synchronous === level) return;
    this.db.exec(`PRAGMA synchronous = ${level}`);
    this.#synchronous = level;
  }

  /** Make every commit so far power-safe: a full commit of one tiny write fsyncs the whole WAL. */
  #syncWal(): void {
    this.#setSynchronous('FULL');
    this.stmt('BEGIN IMMEDIATE').run();
    this.stmt('INSERT OR REPLACE INTO sync_marker (id, at) VALUES (1, ?)').run(Date.now());
    this.stmt('COMMIT').run();
  }

  #savepoint<T>(fn: () => T): T {
    // A failing statement in the middle of `fn` must not leave half of `fn` in the unit of work.
    this.stmt('SAVEPOINT unit').run();
    try {
      const value = fn();
      this.stmt('RELEASE unit').run();
      return value;
    } catch (error) {
      try {
        this.stmt('ROLLBACK TO unit').run();
        this.stmt('RELEASE unit').run();
      } catch (cause) {
        throw this.#fail(cause, 'cannot roll back on the state file');
      }
      if (isIoError(error)) throw this.#fail(error, 'cannot write to the state file');
      throw error;
    }
  }

  #scheduleCommit(): void {
    if (this.#commitScheduled) return;
    this.#commitScheduled = true;
    // Group commit: writes made in the same turn of the event loop share one fsync.
    setImmediate(() => {
      this.#commitScheduled = false;
      if (this.#holds > 0) return;
      try {
        this.commit();
      } catch {
        // The waiters were told; the runtime sees `failure` on its next write.
      }
    });
  }

  #fail(cause: unknown, what: string): StateWriteError {
    if (!this.#failed) {
      this.#failed = stateError(cause, what);
      try {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
      } catch {
        // Rolled back by SQLite already, or the file is gone: nothing was committed either way.
      }
      this.#inTransaction = false;
      for (const w of this.#waiters.splice(0)) w.reject(this.#failed);
    }
    return this.#failed;
  }

  // ---- backlog and recovery -----------------------------------------------------------------

  backlog(): Backlog {
    return { ...this.#backlog };
  }

  /**
   * @internal A queue may keep `chars` more of a record's body in memory for the hand-off to the
   * next stage, unless that would pass {@link HAND_OFF_MAX_CHARS} (then the body is read back).
   */
  reserveHandOff(chars: number): boolean {
    if (this.#handOffChars + chars > HAND_OFF_MAX_CHARS) return false;
    this.#handOffChars += chars;
    return true;
  }

  /** @internal */
  releaseHandOff(chars: number): void {
    this.#handOffChars -= chars;
  }

  // ---- body parts (bodies stored once) --------------------------------------------------------

  /** @internal Store `text` as a new body part; call inside a unit of work, then splice it. */
  storePart(traceId: string, text: string, bytes: number): string {
    const key = randomUUID();
    this.stmt('INSERT INTO body_parts (key, text) VALUES (?, ?)').run(key, text);
    this.#rememberPart(traceId, { key, text, bytes });
    return key;
  }

  /**
   * @internal The body part of trace `traceId` whose text is `text`, if this process knows it and
   * it can be spliced into a serialisation as it is (no character JSON would escape).
   */
  knownPart(traceId: string, text: string): KnownPart | undefined {
    const part = this.#parts.get(traceId);
    // Usually the very same string (the inbound body, read back once): no comparison of content.
    if (!part || part.text !== text) return undefined;
    part.plain ??= !NEEDS_ESCAPE.test(text);
    return part.plain ? part : undefined;
  }

  /** @internal Whether part `key` is still stored (a message may refer to it; else store the body). */
  refPart(key: string): boolean {
    // Answered from the key's index: the text is not read.
    return this.stmt('SELECT 1 FROM body_parts WHERE key = ?').get(key) !== undefined;
  }

  /** @internal A splice of part `key` went: with the last one, the part goes too. */
  unrefPart(key: string, traceId: string): void {
    const gone = this.stmt(
      'DELETE FROM body_parts WHERE key = ? AND NOT EXISTS (SELECT 1 FROM message_splices WHERE part = ?)',
    ).run(key, key).changes;
    if (gone === 0) return;
    const known = this.#parts.get(traceId);
    if (known?.key === key) {
      this.#parts.delete(traceId);
      this.#partChars -= known.text.length;
    }
  }

  /** @internal A stored body, from its own row or spliced from its template and part. */
  bodyOf(stored: BodyColumns, traceId: string): string {
    if (stored.body !== null) return stored.body;
    if (
      stored.template === null ||
      stored.at === null ||
      stored.part_key === null ||
      stored.part_text === null
    ) {
      throw new StateWriteError('CORRUPT_BODY', `${this.file} has a queued message without its body`);
    }
    const text = stored.part_text;
    this.#rememberPart(traceId, { key: stored.part_key, text, bytes: -1 });
    return stored.template === ''
      ? text
      : stored.template.slice(0, stored.at) + text + stored.template.slice(stored.at);
  }

  #rememberPart(traceId: string, part: KnownPart): void {
    const known = this.#parts.get(traceId);
    if (known?.key === part.key) {
      // The string just read is the one the stage will carry on: keep it, so the next hop finds
      // the very same string (no comparison of content).
      known.text = part.text;
      return;
    }
    if (known) this.#partChars -= known.text.length;
    this.#parts.delete(traceId);
    if (this.#partChars + part.text.length > PARTS_MAX_CHARS) return;
    if (part.bytes < 0) part.bytes = Buffer.byteLength(part.text, 'utf8');
    this.#parts.set(traceId, part);
    this.#partChars += part.text.length;
  }

  /** @internal queue bookkeeping */
  adjustBacklog(messages: number, bytes: number): void {
    this.#backlog.messages += messages;
    this.#backlog.bytes += bytes;
  }

  #recountBacklog(): void {
    const m = this.stmt(
      'SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM messages WHERE dead_at IS NULL',
    ).get() as { n: number; b: number };
    const b = this.stmt('SELECT coalesce(sum(size), 0) AS b FROM blobs').get() as { b: number };
    this.#backlog.messages = m.n;
    this.#backlog.bytes = m.b + b.b;
  }

  resume(now: number): number {
    return this.transact(() => {
      this.#dropUnownedInboundBlobs();
      this.stmt(
        'UPDATE messages SET visible_at = ?, receipt_handle = NULL WHERE dead_at IS NULL AND visible_at > ?',
      ).run(now, now);
      return (this.stmt('SELECT count(*) AS n FROM messages WHERE dead_at IS NULL').get() as { n: number }).n;
    });
  }

  /**
   * An inbound claim-check blob (`claim-check/ingest-…` from the front door, `claim-check/mesh-…`
   * from the MESH poller) gets its owner in the commit that stores its inbound message. One still
   * without an owner at start was stored by a submission the process died before committing: no 202
   * was sent (the sender sends again, under a new key) or the MESH message was not acknowledged (the
   * next pass stores it again). Nothing refers to it, and it would count against the backlog bound
   * forever. Returns how many went.
   */
  #dropUnownedInboundBlobs(): number {
    const unowned = this.stmt(
      "SELECT key, size FROM blobs WHERE trace_id IS NULL AND (key LIKE 'claim-check/ingest-%' OR key LIKE 'claim-check/mesh-%')",
    ).all() as { key: string; size: number }[];
    let dropped = 0;
    for (const blob of unowned) {
      // A file written before blobs had owners: a stored message may still refer to it.
      const referred = this.stmt(
        'SELECT 1 FROM message_bodies WHERE instr(body, ?) > 0 UNION ALL SELECT 1 FROM message_splices WHERE instr(template, ?) > 0 LIMIT 1',
      ).get(blob.key, blob.key);
      if (referred) continue;
      this.stmt('DELETE FROM blobs WHERE key = ?').run(blob.key);
      this.adjustBacklog(0, -blob.size);
      dropped += 1;
    }
    return dropped;
  }

  recordOutcome(outcome: StoredOutcome): void {
    this.run(() => {
      this.stmt('INSERT OR REPLACE INTO outcomes (trace_id, outcome) VALUES (?, ?)').run(
        outcome.traceId,
        JSON.stringify(outcome),
      );
      // Finished: charged to no sender any more, in the same commit (a dead letter keeps its
      // admission for a redrive).
      if (outcome.status !== 'dead-lettered') {
        this.stmt('DELETE FROM admissions WHERE trace_id = ?').run(outcome.traceId);
      }
    });
  }

  storedOutcome(traceId: string): StoredOutcome | undefined {
    const row = this.stmt('SELECT outcome FROM outcomes WHERE trace_id = ?').get(traceId) as
      | { outcome: string }
      | undefined;
    return row ? (JSON.parse(row.outcome) as StoredOutcome) : undefined;
  }

  forgetOutcome(traceId: string): void {
    this.run(() => this.stmt('DELETE FROM outcomes WHERE trace_id = ?').run(traceId));
  }

  ownBlob(key: string, traceId: string): void {
    this.run(() => this.stmt('UPDATE blobs SET trace_id = ? WHERE key = ?').run(traceId, key));
  }

  releaseTrace(traceId: string): void {
    this.run(() => {
      const rows = this.stmt(
        "SELECT key, size FROM blobs WHERE trace_id = ? OR key LIKE 'claim-check/' || ? || '/%'",
      ).all(traceId, traceId) as { key: string; size: number }[];
      const del = this.stmt('DELETE FROM blobs WHERE key = ?');
      for (const r of rows) {
        del.run(r.key);
        this.adjustBacklog(0, -r.size);
      }
    });
  }

  /** `process`: the trace a submission (by content key) became, if it was accepted before. */
  submission(key: string): { traceId: string; file: string } | undefined {
    const row = this.stmt('SELECT trace_id, file FROM submissions WHERE key = ?').get(key) as
      | { trace_id: string; file: string }
      | undefined;
    return row ? { traceId: row.trace_id, file: row.file } : undefined;
  }

  submissionOf(traceId: string): { key: string; file: string } | undefined {
    const row = this.stmt('SELECT key, file FROM submissions WHERE trace_id = ?').get(traceId) as
      | { key: string; file: string }
      | undefined;
    return row;
  }

  recordSubmission(key: string, traceId: string, file: string): void {
    this.run(() =>
      this.stmt('INSERT OR REPLACE INTO submissions (key, trace_id, file) VALUES (?, ?, ?)').run(
        key,
        traceId,
        file,
      ),
    );
  }

  // ---- serve's per-sender admissions ---------------------------------------------------------

  /** Charge trace `traceId` to `party`; call inside the unit of work that accepts it. */
  recordAdmission(traceId: string, party: string, bytes: number): void {
    this.run(() =>
      this.stmt('INSERT OR REPLACE INTO admissions (trace_id, party, bytes) VALUES (?, ?, ?)').run(
        traceId,
        party,
        bytes,
      ),
    );
  }

  /**
   * Who trace `traceId` is charged to, if serve admitted it and it is not finished (its terminal
   * outcome drops the admission: {@link recordOutcome}).
   */
  admission(traceId: string): { party: string; bytes: number } | undefined {
    return this.stmt('SELECT party, bytes FROM admissions WHERE trace_id = ?').get(traceId) as
      | { party: string; bytes: number }
      | undefined;
  }

  /**
   * At start: the admissions whose trace still has a message in a stage queue (what counts against
   * its sender's share again). Those of traces no longer queued anywhere (a purged DLQ, a
   * trace that left without an outcome) are dropped; those of dead-lettered traces stay for a
   * redrive. One pass over each table, whatever the backlog.
   */
  queuedAdmissions(): { traceId: string; party: string; bytes: number }[] {
    return this.transact(() => {
      const live = new Set<string>();
      const parked = new Set<string>();
      const rows = this.stmt('SELECT DISTINCT trace_id, dead_at IS NULL AS live FROM messages').all() as {
        trace_id: string;
        live: number;
      }[];
      for (const row of rows) (row.live ? live : parked).add(row.trace_id);
      const admissions = this.stmt('SELECT trace_id, party, bytes FROM admissions').all() as {
        trace_id: string;
        party: string;
        bytes: number;
      }[];
      const queued: { traceId: string; party: string; bytes: number }[] = [];
      const drop = this.stmt('DELETE FROM admissions WHERE trace_id = ?');
      for (const a of admissions) {
        if (live.has(a.trace_id)) queued.push({ traceId: a.trace_id, party: a.party, bytes: a.bytes });
        else if (!parked.has(a.trace_id)) drop.run(a.trace_id);
      }
      return queued;
    });
  }

  /** Dead letters of every queue, oldest first, bodies included (operator tooling only). */
  deadLetters(): (QueuedMessage & { queue: string })[] {
    const rows = this.stmt(
      `SELECT m.*, ${this.bodySource.columns} FROM messages m ${this.bodySource.joins} WHERE m.dead_at IS NOT NULL ORDER BY m.dead_at, m.seq`,
    ).all() as (MessageRow & BodyColumns)[];
    return rows.map((r) => ({ ...fromRow({ ...r, body: this.bodyOf(r, r.trace_id) }), queue: r.queue }));
  }

  /**
   * Close the file. Work no one holds is committed; a unit of work still held (a handler
   * invocation cut short by a stop deadline) is rolled back, so it runs again on the next start.
   */
  close(): void {
    if (!this.db.open) return;
    try {
      if (this.#inTransaction && this.#holds === 0 && !this.#failed) this.commit();
    } finally {
      this.#failed ??= new StateWriteError('CLOSED', 'the state file is closed');
      for (const w of this.#waiters.splice(0)) w.reject(this.#failed);
      this.db.close();
    }
  }
}

export class SqliteQueue implements StageQueue {
  readonly name: string;
  readonly settings: QueueSettings;
  readonly #state: SqliteState;
  readonly #clock: Clock;
  readonly #insert: Database.Statement;
  readonly #select: Database.Statement;
  readonly #byId: Database.Statement;
  readonly #body: Database.Statement;
  /**
   * Records sent with `sendRecord` and not yet received: the first receive in this process takes
   * the record from here instead of reading and parsing the stored body. Memory only, bounded by
   * {@link SqliteState.reserveHandOff}; the stored body is the truth. The body itself is not kept
   * (the stages read the record): it is rebuilt only if someone reads it.
   */
  readonly #handOff = new Map<string, HandOff>();

  constructor(state: SqliteState, settings: QueueSettings, clock: Clock) {
    this.name = settings.name;
    this.settings = settings;
    this.#state = state;
    this.#clock = clock;
    this.#insert = this.#state.stmt(
      `INSERT INTO messages (id, queue, trace_id, attributes, bytes, sent_at, receive_count,
         first_received_at, visible_at, receipt_handle, dead_source, dead_reason, dead_at)
       VALUES (@id, @queue, @trace_id, @attributes, @bytes, @sent_at, @receive_count,
         @first_received_at, @visible_at, NULL, @dead_source, @dead_reason, @dead_at)`,
    );
    // Bookkeeping only: a body is read for the messages received, unless it was handed over.
    this.#select = this.#state.stmt(
      'SELECT * FROM messages WHERE queue = ? AND visible_at <= ? ORDER BY seq LIMIT ?',
    );
    const { columns, joins } = state.bodySource;
    this.#body = this.#state.stmt(`SELECT ${columns} FROM messages m ${joins} WHERE m.seq = ?`);
    this.#byId = this.#state.stmt(
      `SELECT m.*, ${columns} FROM messages m ${joins} WHERE m.id = ? AND m.queue = ?`,
    );
  }

  send(
    body: string,
    attributes: Record<string, string> = {},
    messageId: string = randomUUID(),
    sentAt?: number,
  ): string {
    const now = this.#clock.now();
    this.enqueue({ messageId, body, attributes, sentAt: sentAt ?? now, receiveCount: 0, visibleAt: now });
    return messageId;
  }

  sendRecord(sent: PipelineRecord): string {
    // Frozen: the handed-over record and the body rebuilt from it stay what is stored.
    const record = freezeRecord(sent);
    const messageId = randomUUID();
    const now = this.#clock.now();
    const message = { messageId, attributes: {}, sentAt: now, receiveCount: 0, visibleAt: now };
    // The sealed JWE the inbound message stored is not stored again: the body is kept as the record
    // without it plus a reference to that body part (docs/DURABILITY.md, "Bodies stored once").
    const shared = record.sealed && 'inline' in record.sealed ? record.sealed.inline : undefined;
    const part = shared === undefined ? undefined : this.#state.knownPart(record.traceId, shared);
    const spliced = part && spliceTemplate(record);
    const handOff = this.#state.run((): HandOff => {
      if (part && spliced && this.#state.refPart(part.key)) {
        const { template, at } = spliced;
        this.#insertMessage({ ...message, body: '' }, record.traceId, spliced.templateBytes + part.bytes, {
          template,
          part: part.key,
          at,
        });
        const text = part.text;
        return {
          record,
          chars: template.length + text.length,
          body: () => template.slice(0, at) + text + template.slice(at),
        };
      }
      const whole = serialiseRecord(record);
      this.#insertMessage({ ...message, body: whole }, record.traceId, Buffer.byteLength(whole, 'utf8'));
      return { record, chars: whole.length, body: () => serialiseRecord(record) };
    });
    // After the insert (which may throw): only a stored message is handed over.
    if (this.#state.reserveHandOff(handOff.chars)) this.#handOff.set(messageId, handOff);
    return messageId;
  }

  enqueue(m: QueuedMessage): void {
    this.#store(m, traceIdOf(m.body, m.messageId));
  }

  /**
   * Store `m`. A large body becomes a body part of its own (template '' around it), so that the
   * records of the next hops, which carry it inline, can refer to it instead of storing it again.
   */
  #store(m: QueuedMessage, traceId: string): void {
    const bytes = Buffer.byteLength(m.body, 'utf8');
    this.#state.run(() => {
      if (m.body.length < BODY_PART_MIN_CHARS) {
        this.#insertMessage(m, traceId, bytes);
        return;
      }
      const key = this.#state.storePart(traceId, m.body, bytes);
      this.#insertMessage({ ...m, body: '' }, traceId, bytes, { template: '', part: key, at: 0 });
    });
  }

  #insertMessage(
    m: QueuedMessage,
    traceId: string,
    bytes: number,
    splice?: { template: string; part: string; at: number },
  ): void {
    this.#state.run(() => {
      const { lastInsertRowid } = this.#insert.run({
        id: m.messageId,
        queue: this.name,
        trace_id: traceId,
        attributes: JSON.stringify(m.attributes),
        bytes,
        sent_at: m.sentAt,
        receive_count: m.receiveCount,
        first_received_at: m.firstReceivedAt ?? null,
        visible_at: m.visibleAt,
        dead_source: m.deadLetter?.sourceQueue ?? null,
        dead_reason: m.deadLetter?.reason ?? null,
        dead_at: m.deadLetter?.at ?? null,
      });
      if (splice) {
        this.#state
          .stmt('INSERT INTO message_splices (seq, template, part, at) VALUES (?, ?, ?, ?)')
          .run(lastInsertRowid, splice.template, splice.part, splice.at);
      } else {
        this.#state.stmt('INSERT INTO message_bodies (seq, body) VALUES (?, ?)').run(lastInsertRowid, m.body);
      }
    });
    if (!m.deadLetter) this.#state.adjustBacklog(1, bytes);
  }

  /** Delete a message's body (its own row, or its splice and its reference to the body part). */
  #removeBody(seq: number, traceId: string): void {
    const splice = this.#state.stmt('DELETE FROM message_splices WHERE seq = ? RETURNING part').get(seq) as
      | { part: string }
      | undefined;
    if (splice) this.#state.unrefPart(splice.part, traceId);
    else this.#state.stmt('DELETE FROM message_bodies WHERE seq = ?').run(seq);
  }

  /** Forget a handed-over record (its message was received, deleted or moved). */
  #dropHandOff(messageId: string): HandOff | undefined {
    const entry = this.#handOff.get(messageId);
    if (!entry) return undefined;
    this.#handOff.delete(messageId);
    this.#state.releaseHandOff(entry.chars);
    return entry;
  }

  #withBody(row: MessageRow): MessageRow {
    const stored = this.#body.get(row.seq) as BodyColumns;
    row.body = this.#state.bodyOf(stored, row.trace_id);
    return row;
  }

  receive(max: number): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    const { maxReceiveCount, dlq, onDeadLetter } = this.settings;
    return this.#state.run(() => {
      for (;;) {
        const now = this.#clock.now();
        const rows = this.#select.all(this.name, now, max - out.length) as MessageRow[];
        if (rows.length === 0) return out;
        let moved = 0;
        for (const row of rows) {
          if (dlq && maxReceiveCount !== undefined && row.receive_count >= maxReceiveCount) {
            this.#dropHandOff(row.id);
            this.#withBody(row);
            const reason = row.last_failure ?? 'unknown';
            this.#state
              .stmt(
                `UPDATE messages SET queue = ?, receive_count = 0, visible_at = ?, receipt_handle = NULL,
                   dead_source = ?, dead_reason = ?, dead_at = ? WHERE id = ?`,
              )
              .run(dlq.name, now, this.name, reason, now, row.id);
            this.#state.adjustBacklog(-1, -row.bytes);
            moved += 1;
            onDeadLetter?.({
              ...fromRow(row),
              receiveCount: 0,
              visibleAt: now,
              deadLetter: { sourceQueue: this.name, reason, at: now },
            });
            continue;
          }
          const receiptHandle = randomUUID();
          const visibleAt = now + this.settings.visibilityTimeoutSeconds * 1000;
          this.#state
            .stmt(
              `UPDATE messages SET receive_count = receive_count + 1,
                 first_received_at = coalesce(first_received_at, ?), visible_at = ?, receipt_handle = ?
               WHERE id = ?`,
            )
            .run(now, visibleAt, receiptHandle, row.id);
          const handedOver = this.#dropHandOff(row.id);
          if (!handedOver) this.#withBody(row);
          const received: QueuedMessage = {
            ...fromRow(row),
            receiveCount: row.receive_count + 1,
            firstReceivedAt: row.first_received_at ?? now,
            visibleAt,
            receiptHandle,
          };
          if (handedOver) {
            received.record = handedOver.record;
            lazyBody(received, handedOver.body);
          }
          out.push(received);
        }
        if (moved === 0 || out.length >= max) return out;
      }
    });
  }

  delete(messageId: string, receiptHandle: string): boolean {
    this.#dropHandOff(messageId);
    return this.#state.run(() => {
      const row = this.#state
        .stmt(
          'DELETE FROM messages WHERE id = ? AND queue = ? AND receipt_handle = ? RETURNING seq, trace_id, bytes, dead_at',
        )
        .get(messageId, this.name, receiptHandle) as
        | { seq: number; trace_id: string; bytes: number; dead_at: number | null }
        | undefined;
      if (!row) return false;
      this.#removeBody(row.seq, row.trace_id);
      if (row.dead_at === null) this.#state.adjustBacklog(-1, -row.bytes);
      return true;
    });
  }

  noteFailure(messageId: string, reason: string): void {
    this.#state.run(() =>
      this.#state
        .stmt('UPDATE messages SET last_failure = ? WHERE id = ? AND queue = ?')
        .run(reason, messageId, this.name),
    );
  }

  take(messageId: string): QueuedMessage | undefined {
    this.#dropHandOff(messageId);
    return this.#state.run(() => {
      const row = this.#byId.get(messageId, this.name) as (MessageRow & BodyColumns) | undefined;
      if (!row) return undefined;
      row.body = this.#state.bodyOf(row, row.trace_id);
      this.#state.stmt('DELETE FROM messages WHERE seq = ?').run(row.seq);
      this.#removeBody(row.seq, row.trace_id);
      if (row.dead_at === null) this.#state.adjustBacklog(-1, -row.bytes);
      return fromRow(row);
    });
  }

  peekAll(): QueuedMessage[] {
    const rows = this.#state
      .stmt(
        `SELECT m.*, ${this.#state.bodySource.columns} FROM messages m ${this.#state.bodySource.joins} WHERE m.queue = ? ORDER BY m.seq`,
      )
      .all(this.name) as (MessageRow & BodyColumns)[];
    return rows.map((r) => fromRow({ ...r, body: this.#state.bodyOf(r, r.trace_id) }));
  }

  get depth(): number {
    return (
      this.#state.stmt('SELECT count(*) AS n FROM messages WHERE queue = ?').get(this.name) as { n: number }
    ).n;
  }

  nextVisibleAt(): number | undefined {
    const row = this.#state
      .stmt('SELECT min(visible_at) AS t FROM messages WHERE queue = ?')
      .get(this.name) as {
      t: number | null;
    };
    return row.t ?? undefined;
  }
}

/**
 * Conditional writes with expiry. One rule beyond a plain once-store: a duplicate key (`msg#`,
 * `doc#`) whose value names a trace that ended dead-lettered no longer blocks the same message:
 * that trace never reached the recipient, so a resend is the rightful owner (docs/DURABILITY.md).
 */
export class SqliteOnceStore implements OnceStore {
  readonly #state: SqliteState;
  readonly #clock: Clock;

  constructor(state: SqliteState, clock: Clock) {
    this.#state = state;
    this.#clock = clock;
  }

  async putIfAbsent(
    key: string,
    value: string,
    ttlSeconds: number,
  ): Promise<{ created: true } | { created: false; existing: string }> {
    return this.#state.run(() => {
      const now = this.#clock.now();
      const row = this.#state.stmt('SELECT value, expires_at FROM once_keys WHERE key = ?').get(key) as
        | { value: string; expires_at: number }
        | undefined;
      if (row && row.expires_at > now && !this.#ownerDeadLettered(row.value)) {
        return { created: false as const, existing: row.value };
      }
      this.#state
        .stmt('INSERT OR REPLACE INTO once_keys (key, value, expires_at) VALUES (?, ?, ?)')
        .run(key, value, now + ttlSeconds * 1000);
      return { created: true as const };
    });
  }

  #ownerDeadLettered(value: string): boolean {
    if (!value.startsWith('{')) return false;
    let owner: unknown;
    try {
      owner = (JSON.parse(value) as { traceId?: unknown }).traceId;
    } catch {
      return false;
    }
    return typeof owner === 'string' && this.#state.storedOutcome(owner)?.status === 'dead-lettered';
  }

  /** Drop expired keys (run at start; expired keys are ignored anyway). */
  sweep(): number {
    return this.#state.transact(
      () => this.#state.stmt('DELETE FROM once_keys WHERE expires_at <= ?').run(this.#clock.now()).changes,
    );
  }
}

export class SqliteBlobStore {
  readonly #state: SqliteState;

  constructor(state: SqliteState) {
    this.#state = state;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.#state.run(() => {
      const old = this.#state.stmt('SELECT size FROM blobs WHERE key = ?').get(key) as
        | { size: number }
        | undefined;
      this.#state
        .stmt('INSERT OR REPLACE INTO blobs (key, bytes, size, trace_id) VALUES (?, ?, ?, NULL)')
        .run(key, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes.byteLength);
      this.#state.adjustBacklog(0, bytes.byteLength - (old?.size ?? 0));
    });
  }

  async get(key: string): Promise<Uint8Array> {
    const row = this.#state.stmt('SELECT bytes FROM blobs WHERE key = ?').get(key) as
      | { bytes: Buffer }
      | undefined;
    if (!row) throw new Error(`blob ${key} not found`);
    return new Uint8Array(row.bytes.buffer, row.bytes.byteOffset, row.bytes.byteLength);
  }

  async delete(key: string): Promise<void> {
    this.#state.run(() => {
      const old = this.#state.stmt('SELECT size FROM blobs WHERE key = ?').get(key) as
        | { size: number }
        | undefined;
      if (!old) return;
      this.#state.stmt('DELETE FROM blobs WHERE key = ?').run(key);
      this.#state.adjustBacklog(0, -old.size);
    });
  }

  get size(): number {
    return (this.#state.stmt('SELECT count(*) AS n FROM blobs').get() as { n: number }).n;
  }
}

/**
 * The audit trail of one state file: a single hash-chained stream (docs/AUDIT.md). An append reads
 * the head and writes the next link inside the current unit of work, so a unit that rolls back
 * takes its links with it and the next append continues from the committed head: no holes.
 */
export class SqliteAuditLog implements InspectableAuditLog {
  readonly #state: SqliteState;
  readonly #clock: Clock;
  #stream: string | undefined;
  #signer: CheckpointSigner | undefined;
  #policy: CheckpointPolicy = DEFAULT_CHECKPOINT_POLICY;
  #lastCheckpoint = { n: 0, at: 0 };
  #checkpointing: Promise<boolean> | undefined;

  constructor(state: SqliteState, clock: Clock) {
    this.#state = state;
    this.#clock = clock;
  }

  /** The stream id of this state file, chosen at random when the file was created. */
  get stream(): string {
    if (this.#stream === undefined) {
      let row: { value: string } | undefined;
      try {
        row = this.#state.stmt("SELECT value FROM audit_meta WHERE key = 'stream'").get() as typeof row;
      } catch {
        // A file from before the chain, opened read-only (so not migrated).
      }
      if (!row) {
        throw new StateWriteError('NO_AUDIT_CHAIN', `${this.#state.file} was written before the audit chain`);
      }
      this.#stream = row.value;
    }
    return this.#stream;
  }

  /** Sign checkpoints with this key from now on (the embedded runtime's response-signing key). */
  useCheckpointSigner(signer: CheckpointSigner, policy: CheckpointPolicy = DEFAULT_CHECKPOINT_POLICY): void {
    this.#signer = signer;
    this.#policy = policy;
    const last = this.#state.stmt('SELECT max(n) AS n FROM audit_checkpoints').get() as { n: number | null };
    this.#lastCheckpoint = { n: last.n ?? 0, at: this.#clock.now() };
  }

  async append(raw: AuditEntry): Promise<void> {
    const entry = safeAuditEntry(raw);
    const stream = this.stream;
    const n = this.#state.run(() => this.#insert(stream, entry));
    if (this.#due(n)) void this.checkpoint().catch(() => undefined);
  }

  /**
   * The marker is a once-store key (`audit#<trace>#<once>`, the key the stages used before this
   * operation existed, so a trace in flight across the upgrade is still recorded once), written in
   * the same unit of work as the entries: a rollback takes both.
   */
  async appendOnce(once: string, raws: readonly AuditEntry[]): Promise<boolean> {
    const key = `audit#${onceMarker(raws, once)}`;
    const entries = raws.map(safeAuditEntry);
    const stream = this.stream;
    const head = this.#state.run(() => {
      const now = this.#clock.now();
      const row = this.#state.stmt('SELECT expires_at FROM once_keys WHERE key = ?').get(key) as
        | { expires_at: number }
        | undefined;
      if (row && row.expires_at > now) return undefined;
      this.#state
        .stmt('INSERT OR REPLACE INTO once_keys (key, value, expires_at) VALUES (?, ?, ?)')
        .run(key, entries[0]!.traceId, now + AUDIT_TABLE.retentionDays * 86_400_000);
      let n = 0;
      for (const entry of entries) n = this.#insert(stream, entry);
      return n;
    });
    if (head === undefined) return false;
    if (this.#due(head)) void this.checkpoint().catch(() => undefined);
    return true;
  }

  /** Chain `entry` after the head; call inside a unit of work. Returns its position. */
  #insert(stream: string, entry: AuditEntry): number {
    const head = this.#head();
    const n = (head?.seq ?? 0) + 1;
    const prev = head ? (head.hash ?? '') : genesisHash(stream);
    this.#state
      .stmt('INSERT INTO audit (seq, trace_id, entry, prev, hash) VALUES (?, ?, ?, ?, ?)')
      .run(n, entry.traceId, JSON.stringify(entry), prev, linkHash(stream, n, prev, entry));
    return n;
  }

  #head(): { seq: number; hash: string | null } | undefined {
    return this.#state.stmt('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1').get() as
      | { seq: number; hash: string | null }
      | undefined;
  }

  #due(n: number): boolean {
    if (!this.#signer || this.#checkpointing) return false;
    const since = n - this.#lastCheckpoint.n;
    return (
      since >= this.#policy.entries ||
      (since > 0 && this.#clock.now() - this.#lastCheckpoint.at >= this.#policy.seconds * 1000)
    );
  }

  /**
   * Sign the current head and file the checkpoint in the current unit of work. The signature is
   * asynchronous (KMS-shaped port), so the head is checked again before filing: a head rolled back
   * meanwhile is not checkpointed. Returns whether a checkpoint was filed.
   */
  checkpoint(): Promise<boolean> {
    this.#checkpointing ??= this.#checkpoint().finally(() => {
      this.#checkpointing = undefined;
    });
    return this.#checkpointing;
  }

  async #checkpoint(): Promise<boolean> {
    const signer = this.#signer;
    if (!signer || this.#state.failure) return false;
    const head = this.#head();
    if (!head?.hash || head.seq <= this.#lastCheckpoint.n) return false;
    const at = this.#clock.now();
    const jws = await signCheckpoint(signer, {
      stream: this.stream,
      n: head.seq,
      hash: head.hash,
      at: new Date(at).toISOString(),
    });
    if (this.#state.failure) return false;
    const filed = this.#state.run(() => {
      const row = this.#state.stmt('SELECT hash FROM audit WHERE seq = ?').get(head.seq) as
        | { hash: string | null }
        | undefined;
      if (row?.hash !== head.hash) return false;
      this.#state.stmt('INSERT OR IGNORE INTO audit_checkpoints (n, jws) VALUES (?, ?)').run(head.seq, jws);
      return true;
    });
    if (filed) this.#lastCheckpoint = { n: head.seq, at };
    return filed;
  }

  /** Prove the chain of this file with the trusted checkpoint keys (`itk3 audit verify`). */
  verify(keys: CheckpointKeys): StreamReport {
    const rows = this.#state.stmt('SELECT seq, entry, prev, hash FROM audit ORDER BY seq').all() as {
      seq: number;
      entry: string;
      prev: string | null;
      hash: string | null;
    }[];
    const links: ChainLink[] = rows.map((r) => ({
      n: r.seq,
      prev: r.prev ?? '',
      hash: r.hash ?? '',
      entry: JSON.parse(r.entry) as AuditEntry,
    }));
    const checkpoints = this.#state
      .stmt('SELECT n, jws FROM audit_checkpoints ORDER BY n')
      .all() as StoredCheckpoint[];
    return verifyStream(this.stream, links, checkpoints, keys);
  }

  async byTrace(traceId: string): Promise<AuditEntry[]> {
    return this.byTraceNow(traceId);
  }

  byTraceNow(traceId: string): AuditEntry[] {
    const rows = this.#state.stmt('SELECT entry FROM audit WHERE trace_id = ? ORDER BY seq').all(traceId) as {
      entry: string;
    }[];
    return rows.map((r) => JSON.parse(r.entry) as AuditEntry);
  }

  all(): AuditEntry[] {
    const rows = this.#state.stmt('SELECT entry FROM audit ORDER BY seq').all() as { entry: string }[];
    return rows.map((r) => JSON.parse(r.entry) as AuditEntry);
  }

  traces(): string[] {
    const rows = this.#state.stmt('SELECT trace_id FROM audit GROUP BY trace_id ORDER BY min(seq)').all() as {
      trace_id: string;
    }[];
    return rows.map((r) => r.trace_id);
  }

  get count(): number {
    return (this.#state.stmt('SELECT count(*) AS n FROM audit').get() as { n: number }).n;
  }

  /** Operator console (read only): the ids of the `limit` traces with the latest audit activity, newest first. */
  recentTraceIds(limit: number): string[] {
    const rows = this.#state
      .stmt('SELECT trace_id FROM audit GROUP BY trace_id ORDER BY max(seq) DESC LIMIT ?')
      .all(limit) as { trace_id: string }[];
    return rows.map((r) => r.trace_id);
  }

  /** Operator console (read only): the newest `limit` audit entries, oldest first. */
  latest(limit: number): AuditEntry[] {
    const rows = this.#state.stmt('SELECT entry FROM audit ORDER BY seq DESC LIMIT ?').all(limit) as {
      entry: string;
    }[];
    return rows.reverse().map((r) => JSON.parse(r.entry) as AuditEntry);
  }
}

function fromRow(r: MessageRow): QueuedMessage {
  return {
    messageId: r.id,
    body: r.body,
    attributes: JSON.parse(r.attributes) as Record<string, string>,
    sentAt: r.sent_at,
    receiveCount: r.receive_count,
    ...(r.first_received_at !== null ? { firstReceivedAt: r.first_received_at } : {}),
    visibleAt: r.visible_at,
    ...(r.receipt_handle !== null ? { receiptHandle: r.receipt_handle } : {}),
    ...(r.dead_at !== null
      ? {
          deadLetter: { sourceQueue: r.dead_source ?? '', reason: r.dead_reason ?? 'unknown', at: r.dead_at },
        }
      : {}),
  };
}

/** The trace a queue body belongs to: a pipeline record names it; an inbound body is its own. */
function traceIdOf(body: string, fallback: string): string {
  if (body.startsWith('{"traceId":"')) {
    const end = body.indexOf('"', 12);
    if (end > 12) return body.slice(12, end);
  }
  if (body.startsWith('{')) {
    try {
      const t = (JSON.parse(body) as { traceId?: unknown }).traceId;
      if (typeof t === 'string') return t;
    } catch {
      // not a record
    }
  }
  return fallback;
}

/** State files made before the chain: add its columns (their old entries stay unchained). */
function migrateAuditChain(db: Database.Database): void {
  const columns = new Set(
    (db.prepare('PRAGMA table_info(audit)').all() as { name: string }[]).map((c) => c.name),
  );
  if (!columns.has('prev')) db.exec('ALTER TABLE audit ADD COLUMN prev TEXT');
  if (!columns.has('hash')) db.exec('ALTER TABLE audit ADD COLUMN hash TEXT');
  db.prepare("INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('stream', ?)").run(
    `embedded-${randomUUID()}`,
  );
}

const IO_CODES = /^SQLITE_(FULL|IOERR|READONLY|CANTOPEN|CORRUPT|NOTADB|PERM)/;

function isIoError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'string' && IO_CODES.test(code);
}

/** A clear, specific error for an unwritable state file (no message content in it). */
function stateError(cause: unknown, what: string): StateWriteError {
  const code = String((cause as { code?: unknown })?.code ?? 'UNKNOWN');
  const reason = code.startsWith('SQLITE_FULL')
    ? 'the disk is full'
    : code.startsWith('SQLITE_READONLY')
      ? 'the file or its folder is read-only'
      : code.startsWith('SQLITE_IOERR')
        ? 'an I/O error'
        : code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB')
          ? 'it is not a valid state file'
          : code.startsWith('SQLITE_CANTOPEN')
            ? 'it cannot be created or opened (a read-only file system, missing permissions or a missing folder)'
            : ((cause as Error)?.message?.slice(0, 120) ?? 'unknown error');
  return new StateWriteError(code, `${what}: ${reason} (${code})`, { cause });
}
