/**
 * In-process adapters for the embedded runtime: once-store, blob store and audit log.
 * Each keeps state in memory and, where a path is given, mirrors it to disk so `itk3 serve`
 * and `itk3 trace` can look at a run after the fact.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AuditEntry, AuditLog, BlobStore, Clock, OnceStore } from '../../ports/index.js';
import { onceMarker, safeAuditEntry, systemClock } from '../../ports/index.js';

/**
 * Conditional writes with expiry, judged on the injected clock. With a file, every write is
 * appended to it and read back at start, so replays and duplicates are caught across runs of the
 * command line, not only within one process.
 */
export class MemoryOnceStore implements OnceStore {
  readonly #items = new Map<string, { value: string; expiresAt: number }>();
  readonly #clock: Clock;
  readonly #file: string | undefined;

  constructor(clock: Clock = systemClock, opts: { file?: string } = {}) {
    this.#clock = clock;
    this.#file = opts.file;
    if (this.#file) {
      mkdirSync(dirname(this.#file), { recursive: true });
      if (existsSync(this.#file)) {
        for (const line of readFileSync(this.#file, 'utf8').split('\n')) {
          if (!line.trim()) continue;
          const { k, v, e } = JSON.parse(line) as { k: string; v: string; e: number };
          if (!this.#items.has(k)) this.#items.set(k, { value: v, expiresAt: e });
        }
      }
    }
  }

  async putIfAbsent(
    key: string,
    value: string,
    ttlSeconds: number,
  ): Promise<{ created: true } | { created: false; existing: string }> {
    const now = this.#clock.now();
    const existing = this.#items.get(key);
    if (existing && existing.expiresAt > now) return { created: false, existing: existing.value };
    const expiresAt = now + ttlSeconds * 1000;
    this.#items.set(key, { value, expiresAt });
    if (this.#file)
      appendFileSync(this.#file, `${JSON.stringify({ k: key, v: value, e: expiresAt })}\n`, { mode: 0o600 });
    return { created: true };
  }

  get size(): number {
    return this.#items.size;
  }
}

/** Claim-check payloads in memory. */
export class MemoryBlobStore implements BlobStore {
  readonly #blobs = new Map<string, Uint8Array>();
  /** Blobs whose key does not name their trace (the inbound claim check), by owning trace. */
  readonly #owned = new Map<string, string[]>();

  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.#blobs.set(key, bytes.slice());
  }

  async get(key: string): Promise<Uint8Array> {
    const bytes = this.#blobs.get(key);
    if (!bytes) throw new Error(`blob ${key} not found`);
    return bytes;
  }

  async delete(key: string): Promise<void> {
    this.#blobs.delete(key);
  }

  own(key: string, traceId: string): void {
    this.#owned.set(traceId, [...(this.#owned.get(traceId) ?? []), key]);
  }

  /** Remove every blob of one trace: its artefacts and any blob it owns. */
  deleteTrace(traceId: string): void {
    const prefix = `claim-check/${traceId}/`;
    for (const key of [...this.#blobs.keys()]) if (key.startsWith(prefix)) this.#blobs.delete(key);
    for (const key of this.#owned.get(traceId) ?? []) this.#blobs.delete(key);
    this.#owned.delete(traceId);
  }

  get size(): number {
    return this.#blobs.size;
  }

  get bytes(): number {
    let n = 0;
    for (const b of this.#blobs.values()) n += b.byteLength;
    return n;
  }
}

/** Audit trail in memory, optionally appended to a JSON-lines file. */
export class MemoryAuditLog implements AuditLog {
  readonly #byTrace = new Map<string, AuditEntry[]>();
  /** `<trace>#<once>` markers of {@link appendOnce}. */
  readonly #markers = new Set<string>();
  readonly #file: string | undefined;
  #count = 0;

  constructor(opts: { file?: string } = {}) {
    this.#file = opts.file;
    if (this.#file) {
      mkdirSync(dirname(this.#file), { recursive: true });
      if (existsSync(this.#file)) {
        for (const line of readFileSync(this.#file, 'utf8').split('\n')) {
          if (!line.trim()) continue;
          const entry = JSON.parse(line) as AuditEntry;
          this.#remember(entry);
          // The file holds entries only: an outcome recorded before has an entry of its marker's
          // stage and event (markers are `<stage>#<event>` of the outcome's first entry).
          this.#markers.add(`${entry.traceId}#${entry.stage}#${entry.event}`);
        }
      }
    }
  }

  async append(raw: AuditEntry): Promise<void> {
    const entry = safeAuditEntry(raw);
    this.#remember(entry);
    if (this.#file) appendFileSync(this.#file, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
  }

  async appendOnce(once: string, raws: readonly AuditEntry[]): Promise<boolean> {
    const marker = onceMarker(raws, once);
    if (this.#markers.has(marker)) return false;
    const entries = raws.map(safeAuditEntry);
    this.#markers.add(marker);
    for (const entry of entries) this.#remember(entry);
    if (this.#file) {
      const lines = entries.map((x) => `${JSON.stringify(x)}\n`).join('');
      appendFileSync(this.#file, lines, { mode: 0o600 });
    }
    return true;
  }

  async byTrace(traceId: string): Promise<AuditEntry[]> {
    return [...(this.#byTrace.get(traceId) ?? [])];
  }

  /** Every entry, in append order per trace. */
  all(): AuditEntry[] {
    return [...this.#byTrace.values()].flat();
  }

  traces(): string[] {
    return [...this.#byTrace.keys()];
  }

  get count(): number {
    return this.#count;
  }

  #remember(entry: AuditEntry): void {
    this.#count += 1;
    const list = this.#byTrace.get(entry.traceId);
    if (list) list.push(entry);
    else this.#byTrace.set(entry.traceId, [entry]);
  }
}
