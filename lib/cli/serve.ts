/**
 * `itk3 serve`: the HTTP front door on 127.0.0.1 feeding the embedded pipeline, with real time
 * (visibility timeouts really wait). `POST /messages` takes `Authorization: Bearer <jwt>` and the
 * compact JWE as the body and answers 202 with a tracking id; `GET /messages/<id>`, with a
 * credential of the organisation that submitted it, reports where that message stands.
 *
 * Built to be judged as an internet-facing listener (SECURITY.md, "The HTTP listener"): the Host
 * header is checked against an allow-list; the credential is verified (signature and claims, with
 * the issuers' public keys, no jti consumed) before any body is read, and every refusal of it is
 * the same 401; a body over the size limit is answered 413 and its connection dropped, unread;
 * header, request, keep-alive and idle timeouts and a connection cap bound what slow clients hold;
 * over a backlog bound new submissions get 503 with `Retry-After`, and a sender over its own share
 * of those bounds gets its own 503 (SENDER_BACKLOG_FULL), so one cannot fill them for everyone else.
 * An outcome is shown only to the
 * organisation recorded as the trace's sender; anyone else gets the 404 of an unknown id.
 *
 * State lives in `<out>/state.db` (docs/DURABILITY.md): a 202 is sent only once the submission is
 * committed there, a start resumes every trace without a terminal outcome, and a stop finishes or
 * parks the work in hand within a bound.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import type { WorkerPool } from '../adapters/local/worker-pool.js';
import type { LoadedConfig } from '../config/load.js';
import { createConsole } from '../console/server.js';
import { type VerifiedCredential, verifyCredential } from '../envelope/token.js';
import type { StageSettings } from '../infra/definitions.js';
import { bearerCredential, ingest } from '../ingest.js';
import { LocalDeadLetters } from '../ops/dead-letters.js';
import type { StageName } from '../pipeline/topology.js';
import type { KeyService } from '../ports/index.js';
import { systemClock } from '../ports/index.js';
import { EmbeddedPipeline, outcomeView } from '../runtime/embedded.js';
import { credentialOnceKey } from '../stages/authenticate.js';
import { reconcileDeliveryFolders } from './ops.js';

/** What the listener holds open and queues, at most. Times in milliseconds. */
export interface ListenerLimits {
  /** Time to receive the complete request headers (Node `headersTimeout`). */
  headersTimeoutMs: number;
  /** Time to receive the complete request, body included (Node `requestTimeout`). */
  requestTimeoutMs: number;
  /** How long an idle keep-alive connection waits for its next request (Node `keepAliveTimeout`). */
  keepAliveTimeoutMs: number;
  /** A socket with no traffic for this long is destroyed, whatever it was doing. */
  idleTimeoutMs: number;
  /** Concurrent connections; further ones are closed on accept (Node `maxConnections`). */
  maxConnections: number;
  /** Queued messages (the five stage queues, not DLQs) above which POST answers 503. */
  maxBacklogMessages: number;
  /** Queued body bytes above which POST answers 503. */
  maxBacklogBytes: number;
  /**
   * Bytes of request bodies being read and ingested at once (a body counts at its Content-Length,
   * or at the size limit when chunked, from before it is read until it is answered); a POST that
   * would pass it answers 503 unread. Bodies are held in memory while read, so this bounds what
   * concurrent senders can make the process hold, whatever `maxConnections` allows.
   */
  maxInflightBytes: number;
  /**
   * The fraction (0 < F ≤ 1) of each of the three bounds above that one sender (see
   * {@link backlogParty}) may hold: its queued messages and bytes with its bodies being read, and
   * its bodies being read alone (one is always let in). Over it its submissions answer 503
   * SENDER_BACKLOG_FULL while others' are still taken; 1 turns the shares off.
   */
  backlogShare: number;
  /** `Retry-After` of a 503, in seconds. */
  retryAfterSeconds: number;
}

export const DEFAULT_LISTENER_LIMITS: Readonly<ListenerLimits> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 256,
  maxBacklogMessages: 1_000,
  maxBacklogBytes: 256 * 1024 * 1024,
  maxInflightBytes: 64 * 1024 * 1024,
  backlogShare: 0.25,
  retryAfterSeconds: 5,
};

export interface ServeOptions {
  config: LoadedConfig;
  keys: KeyService;
  baseDir: string;
  port: number;
  /**
   * Accepted `Host` header values (`host:port`, compared case-insensitively).
   * @default - `127.0.0.1:<port>` and `localhost:<port>`, the listen address
   */
  allowedHosts?: readonly string[];
  /** @default DEFAULT_LISTENER_LIMITS */
  limits?: Partial<ListenerLimits>;
  /** Per-stage overrides (tests shorten visibility timeouts). */
  stages?: Partial<Record<StageName, Partial<StageSettings>>>;
  /** Told when the state file can no longer be written: the server has stopped taking work. */
  onFatal?: (error: Error) => void;
  /**
   * The operator console under `/console/` (lib/console/server.ts), with the operator token its
   * API requires.
   * @default - no console: `/console/…` is 404 like any unknown path
   */
  console?: { operatorToken: string };
  /** The CPU-heavy steps on this worker pool (`--workers`); the caller closes it after {@link RunningServer.close}. */
  pool?: WorkerPool;
}

export interface RunningServer {
  port: number;
  pipeline: EmbeddedPipeline;
  /** The limits in force (defaults filled in). */
  limits: Readonly<ListenerLimits>;
  /** How many queued messages the previous process left unfinished, resumed at start. */
  resumed: number;
  /** What `party` ({@link backlogParty}) holds now against its share of the backlog bounds. */
  senderBacklog(party: string): Readonly<SenderUsage>;
  /** Resolves once every accepted message has finished (delivered, rejected or dead-lettered). */
  idle(): Promise<void>;
  /**
   * Graceful stop: no new requests, the running handler invocation finishes, nothing waits for a
   * visibility timeout; whatever is unfinished stays in the state file for the next start. Resolves
   * within `timeoutMs` (then an invocation still running is abandoned: its unit of work was never
   * committed, so it runs again on the next start).
   */
  close(timeoutMs?: number): Promise<void>;
}

/** Every refusal of a credential, whatever the reason: the reason would tell issuers, kids and algs apart. */
const UNAUTHENTICATED = {
  error: 'UNAUTHENTICATED',
  message: 'send a valid credential as Authorization: Bearer <jwt>',
} as const;
const NOT_FOUND = { error: 'NOT_FOUND', message: 'unknown tracking id' } as const;
const TOO_LARGE = { error: 'MESSAGE_TOO_LARGE', message: 'sealed message exceeds the size limit' } as const;
const BACKLOG_FULL = { error: 'BACKLOG_FULL', message: 'the pipeline is busy; try again later' } as const;
const SENDER_BACKLOG_FULL = {
  error: 'SENDER_BACKLOG_FULL',
  message: 'your submissions hold your share of the pipeline; try again once some have finished',
} as const;

/**
 * Who a submission is charged to against the per-sender share: the party holding the credential.
 * An organisation's own credential is charged to the organisation; a delegated one to the hub
 * acting (the outermost actor, under its issuer), whichever organisation it acts for. Charged to
 * each organisation instead, a hub granted by k organisations would hold k shares and could fill
 * the bounds for everyone; charged to itself it holds one, and its traffic never uses up the share
 * of an organisation's own system.
 */
export function backlogParty(
  principal: Pick<VerifiedCredential, 'organisation' | 'actors' | 'issuer'>,
): string {
  const actor = principal.actors[0];
  return actor === undefined ? principal.organisation : `actor:${principal.issuer}:${actor}`;
}

/** What one sender holds against its share: queued work it submitted, and bodies being read. */
interface SenderUsage {
  queuedMessages: number;
  queuedBytes: number;
  readingMessages: number;
  readingBytes: number;
}

const NO_USAGE: Readonly<SenderUsage> = Object.freeze({
  queuedMessages: 0,
  queuedBytes: 0,
  readingMessages: 0,
  readingBytes: 0,
});

/**
 * Each sender's usage, kept as submissions are read, accepted and finished (O(1) per request,
 * whatever the backlog). A queued submission counts once, at its sealed body's size, from the
 * commit that accepts it until its trace is finished or dead-lettered (a redrive counts it again).
 */
class SenderShares {
  readonly #usage = new Map<string, SenderUsage>();
  readonly #charges = new Map<string, { party: string; bytes: number }>();

  of(party: string): Readonly<SenderUsage> {
    return this.#usage.get(party) ?? NO_USAGE;
  }

  reading(party: string, messages: number, bytes: number): void {
    const usage = this.#entry(party);
    usage.readingMessages += messages;
    usage.readingBytes += bytes;
    this.#tidy(party, usage);
  }

  charge(traceId: string, party: string, bytes: number): void {
    if (this.#charges.has(traceId)) return;
    this.#charges.set(traceId, { party, bytes });
    const usage = this.#entry(party);
    usage.queuedMessages += 1;
    usage.queuedBytes += bytes;
  }

  release(traceId: string): void {
    const charge = this.#charges.get(traceId);
    if (!charge) return;
    this.#charges.delete(traceId);
    const usage = this.#entry(charge.party);
    usage.queuedMessages -= 1;
    usage.queuedBytes -= charge.bytes;
    this.#tidy(charge.party, usage);
  }

  /** Nothing is queued: no charge can be right any more (a trace that left without an outcome). */
  releaseAll(): void {
    for (const traceId of [...this.#charges.keys()]) this.release(traceId);
  }

  get charged(): number {
    return this.#charges.size;
  }

  #entry(party: string): SenderUsage {
    let usage = this.#usage.get(party);
    if (!usage) {
      usage = { ...NO_USAGE };
      this.#usage.set(party, usage);
    }
    return usage;
  }

  #tidy(party: string, usage: SenderUsage): void {
    if (usage.queuedMessages === 0 && usage.readingMessages === 0) this.#usage.delete(party);
  }
}

/**
 * Headers a request may carry once. Node keeps the first of a repeated `Host`, `Authorization`,
 * `Content-Type`… and drops the rest, while a proxy or another server may take the last: the
 * credential checked (or the Host allowed) would not be the one everyone else read.
 */
const SINGLE_HEADERS = [
  'host',
  'authorization',
  'content-length',
  'content-type',
  'content-encoding',
  'transfer-encoding',
] as const;

interface Refusal {
  status: number;
  body: { error: string; message: string };
}

/**
 * A request every reader would take the same way, or why not (SECURITY.md, "The HTTP listener"):
 * an origin-form target (an absolute-form one names an authority the Host check never saw) whose
 * path the URL parser leaves as it is, no repeated single-use header, and no content coding (serve
 * reads the bytes as sent; a reader honouring `Content-Encoding: gzip` would see other bytes, or
 * inflate a bomb). Trailers are refused once the body has been read (submit).
 */
function ambiguousRequest(req: IncomingMessage): Refusal | undefined {
  const target = req.url ?? '';
  if (!target.startsWith('/')) {
    return {
      status: 400,
      body: { error: 'REQUEST_TARGET_NOT_ORIGIN_FORM', message: 'send the request target as a path' },
    };
  }
  // The path routed on is the URL parser's: dot segments removed, `\` taken as `/`, `//x` an
  // authority. A proxy in front may route the raw text instead, so only a path that is already
  // what the parser makes of it is served (`/console/../messages` is not `/messages` to everyone).
  const path = target.split('?', 1)[0] ?? '';
  if (path.startsWith('//') || new URL(path, 'http://127.0.0.1').pathname !== path) {
    return {
      status: 400,
      body: {
        error: 'REQUEST_TARGET_NOT_NORMALISED',
        message: 'send the path without dot segments or backslashes',
      },
    };
  }
  for (const name of SINGLE_HEADERS) {
    if ((req.headersDistinct[name]?.length ?? 0) > 1) {
      return {
        status: 400,
        body: { error: 'HEADER_REPEATED', message: `the ${name} header may appear once` },
      };
    }
  }
  const coding = req.headers['content-encoding'];
  if (coding !== undefined && coding.trim().toLowerCase() !== 'identity') {
    return {
      status: 415,
      body: { error: 'CONTENT_ENCODING_NOT_ACCEPTED', message: 'send the body without a content coding' },
    };
  }
  return undefined;
}

const DEFAULT_STOP_TIMEOUT_MS = 10_000;

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const limits: ListenerLimits = { ...DEFAULT_LISTENER_LIMITS, ...opts.limits };
  checkLimits(limits);
  const state = new SqliteState(join(opts.baseDir, 'state.db'), { clock: systemClock });
  const pipeline = new EmbeddedPipeline({
    config: opts.config,
    keys: opts.keys,
    ...(opts.pool ? { pool: opts.pool } : {}),
    baseDir: opts.baseDir,
    clock: systemClock,
    state,
    // One backlog rule: the listener's bounds are the pipeline's (ingest refuses over them too).
    limits: { maxMessages: limits.maxBacklogMessages, maxBytes: limits.maxBacklogBytes },
    ...(opts.stages ? { stages: opts.stages } : {}),
  });
  state.once.sweep();
  reconcileDeliveryFolders(opts.config, opts.baseDir);
  const resumed = pipeline.resume();
  // Each sender's share: what it has queued counts again after a restart (its admissions are in the
  // state file), is released when its trace finishes, and counts again when a redrive brings it back.
  const shares = new SenderShares();
  for (const a of state.queuedAdmissions()) shares.charge(a.traceId, a.party, a.bytes);
  // (The state drops a finished trace's admission in the commit of its outcome.)
  pipeline.onOutcome = (outcome) => shares.release(outcome.traceId);
  pipeline.onRedriven = (traceId) => {
    const admission = state.admission(traceId);
    if (admission) shares.charge(traceId, admission.party, admission.bytes);
  };
  const share = (bound: number) => Math.max(1, Math.floor(bound * limits.backlogShare));
  const senderBounds = {
    messages: share(limits.maxBacklogMessages),
    bytes: share(limits.maxBacklogBytes),
    inflightBytes: share(limits.maxInflightBytes),
  };
  let fatal: Error | undefined;
  // One drain at a time; a submission during a drain schedules another.
  let draining: Promise<void> = Promise.resolve();
  let again = false;
  let running = false;
  const kick = () => {
    if (fatal || pipeline.stopping) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    draining = (async () => {
      try {
        do {
          again = false;
          await pipeline.drain();
        } while (again && !pipeline.stopping);
      } catch (error) {
        // The state file cannot be written: stop taking work; nothing half-written was committed.
        fatal = error as Error;
        server.close();
        opts.onFatal?.(fatal);
      } finally {
        running = false;
      }
    })();
  };

  const operatorConsole = opts.console
    ? createConsole({
        token: opts.console.operatorToken,
        audit: state.audit,
        pipeline,
        deadLetters: new LocalDeadLetters(pipeline, opts.baseDir),
        onRedrive: kick,
      })
    : undefined;

  const maxSealedBytes = opts.config.doc.limits.maxSealedBytes;
  /** Authenticated submissions whose body is being read or ingested: not yet in the queues. */
  const inFlight = { messages: 0, bytes: 0 };
  /**
   * Credentials a submission was accepted (or is being read) for, by their once-store key, until
   * they expire. Another POST with a spent credential — a captured one replayed with any body — is
   * the 401 of any refusal, before its body is read or stored, instead of a 202 and a stored body
   * that authenticate then refuses as TOKEN_REPLAYED. This process only, best effort: the
   * once-store at authenticate stays the authority.
   */
  const spentCredentials = new Map<string, number>();
  let spentSweptAt = 0;
  const skewMs = opts.config.doc.limits.clockSkewSeconds * 1000;
  let allowedHosts = new Set<string>();

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) drop(res, 500, { error: 'INTERNAL', message: 'unexpected error' });
      else res.destroy();
    });
  };
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // Node checks the header and request timeouts on this period (default 30 s): keep it a
      // fraction of the shortest, so a slow client is cut off close to its deadline.
      connectionsCheckingInterval: Math.max(
        25,
        Math.min(1_000, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 4)),
      ),
    },
    onRequest,
  );
  // `Expect: 100-continue`: left to itself Node answers 100 Continue before any handler runs,
  // inviting the body of a request nobody has authenticated. A submission's body is asked for by
  // submit, once the credential and the backlog bounds have passed, so a refusal reaches the sender
  // before it sends a byte of it; anything else continues at once.
  server.on('checkContinue', (req, res) => {
    const submission =
      req.method === 'POST' && new URL(req.url ?? '/', 'http://127.0.0.1').pathname === '/messages';
    if (!submission) res.writeContinue();
    onRequest(req, res);
  });
  server.maxConnections = limits.maxConnections;
  // With no 'timeout' listener, Node destroys a socket idle for this long.
  server.setTimeout(limits.idleTimeoutMs);

  /** The credential's principal, or undefined for any refusal (reasons are not told apart). */
  async function authenticated(req: IncomingMessage, at: number): Promise<VerifiedCredential | undefined> {
    const token = bearerCredential(req.headers.authorization);
    if (!token) return undefined;
    try {
      return await verifyCredential(token, opts.config, at);
    } catch {
      return undefined;
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const ambiguous = ambiguousRequest(req);
    if (ambiguous) return drop(res, ambiguous.status, ambiguous.body);
    if (!allowedHosts.has((req.headers.host ?? '').toLowerCase())) {
      return drop(res, 421, { error: 'MISDIRECTED', message: 'Host is not served here' });
    }
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method === 'POST' && url.pathname === '/messages') return submit(req, res);
    if (operatorConsole && (url.pathname === '/console' || url.pathname.startsWith('/console/'))) {
      return operatorConsole(req, res, url);
    }
    const match = /^\/messages\/([A-Za-z0-9-]{1,64})$/.exec(url.pathname);
    if (req.method === 'GET' && match) return report(req, res, match[1]!);
    return drop(res, 404, { error: 'NOT_FOUND', message: 'POST /messages or GET /messages/<trackingId>' });
  }

  async function submit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Refusals before the body is read are answered without reading it (drop: at most a short
    // drain of a small body, so the answer is not lost to a reset).
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxSealedBytes) return drop(res, 413, TOO_LARGE);
    const receivedAt = Date.now();
    const principal = await authenticated(req, receivedAt);
    if (!principal) return drop(res, 401, UNAUTHENTICATED, { 'www-authenticate': 'Bearer' });
    const onceKey = credentialOnceKey(principal);
    if (receivedAt - spentSweptAt > 1_000) {
      for (const [key, until] of spentCredentials) if (until <= receivedAt) spentCredentials.delete(key);
      spentSweptAt = receivedAt;
    }
    if ((spentCredentials.get(onceKey) ?? 0) > receivedAt) {
      return drop(res, 401, UNAUTHENTICATED, { 'www-authenticate': 'Bearer' });
    }
    // Bodies being read count as backlog already: concurrent uploads that each passed the check
    // would otherwise hold up to maxConnections × maxSealedBytes in memory before any is queued.
    // A chunked body is reserved at the size limit, its only bound.
    const reservedBytes = req.headers['transfer-encoding'] === undefined ? declared : maxSealedBytes;
    const backlog = pipeline.backlog();
    if (backlog.messages === 0 && shares.charged > 0) shares.releaseAll();
    // The sender's own share first: over it, the answer tells it that it is its own doing.
    const party = backlogParty(principal);
    const own = shares.of(party);
    if (
      limits.backlogShare < 1 &&
      (own.queuedMessages + own.readingMessages >= senderBounds.messages ||
        own.queuedBytes + own.readingBytes >= senderBounds.bytes ||
        (own.readingBytes > 0 && own.readingBytes + reservedBytes > senderBounds.inflightBytes))
    ) {
      return drop(res, 503, SENDER_BACKLOG_FULL, { 'retry-after': String(limits.retryAfterSeconds) });
    }
    if (
      backlog.messages + inFlight.messages >= limits.maxBacklogMessages ||
      backlog.bytes + inFlight.bytes >= limits.maxBacklogBytes ||
      // Bodies held in memory while read: one is always let in, more only within the bound.
      (inFlight.bytes > 0 && inFlight.bytes + reservedBytes > limits.maxInflightBytes)
    ) {
      return drop(res, 503, BACKLOG_FULL, { 'retry-after': String(limits.retryAfterSeconds) });
    }
    inFlight.messages += 1;
    inFlight.bytes += reservedBytes;
    shares.reading(party, 1, reservedBytes);
    spentCredentials.set(onceKey, principal.exp * 1000 + skewMs);
    if ((req.headers.expect ?? '').toLowerCase() === '100-continue') res.writeContinue();
    let result: Awaited<ReturnType<typeof ingest>> | undefined;
    try {
      const body = await readBodyWithin(req, maxSealedBytes);
      if (body === undefined) return drop(res, 413, TOO_LARGE);
      if (Object.keys(req.trailers).length > 0) {
        // Fields after the body were never checked with the headers: refused, not dropped unseen.
        return send(res, 400, { error: 'TRAILERS_NOT_ACCEPTED', message: 'send every field as a header' });
      }
      const bodyBytes = Buffer.byteLength(body, 'utf8');
      result = await ingest(
        { authorization: req.headers.authorization, body, receivedAt, source: 'http' },
        // Charged to its sender in the commit that accepts it: a restart finds the charge there.
        pipeline.portsAccepting((traceId) => {
          state.recordAdmission(traceId, party, bodyBytes);
          shares.charge(traceId, party, bodyBytes);
        }),
        opts.config,
      );
    } finally {
      // Released once ingest has answered: an accepted body is counted by the queues from then on.
      inFlight.messages -= 1;
      inFlight.bytes -= reservedBytes;
      shares.reading(party, -1, -reservedBytes);
      // Not accepted: the credential is not spent, the sender may present it again.
      if (result?.status !== 202) spentCredentials.delete(onceKey);
    }
    if (result.status === 202) {
      // The trace's owner, for GET: the organisation this credential authenticated.
      await pipeline.audit.append({
        traceId: result.trackingId,
        at: new Date(receivedAt).toISOString(),
        stage: 'ingest',
        event: 'received',
        sender: principal.organisation,
        // A delegated submission also records who acted, for GET: a hub reads its own only.
        ...(principal.actors.length > 0 ? { detail: actorsDetail(principal.actors) } : {}),
      });
      kick();
      return send(res, 202, { trackingId: result.trackingId });
    }
    if (result.status === 401) return send(res, 401, UNAUTHENTICATED, { 'www-authenticate': 'Bearer' });
    if (result.status === 503) {
      return send(
        res,
        503,
        { error: result.error, message: result.message },
        { 'retry-after': String(limits.retryAfterSeconds) },
      );
    }
    return send(res, result.status, { error: result.error, message: result.message });
  }

  /**
   * An outcome, only to the organisation recorded as the trace's sender (every sender the audit
   * names must be it). A delegated credential (a hub acting for the organisation) is trusted for
   * what it sent, not for the organisation's other traffic: it sees a trace only when the same
   * actor chain submitted it. Anything else — no or a bad credential, another organisation, another
   * hub, an unknown id — is the same 404, so whether a tracking id exists cannot be probed.
   */
  async function report(req: IncomingMessage, res: ServerResponse, traceId: string): Promise<void> {
    const principal = await authenticated(req, Date.now());
    if (!principal) return send(res, 404, NOT_FOUND);
    const entries = await pipeline.audit.byTrace(traceId);
    const senders = entries.flatMap((e) => (e.sender ? [e.sender] : []));
    if (senders.length === 0 || senders.some((s) => s !== principal.organisation)) {
      return send(res, 404, NOT_FOUND);
    }
    if (principal.actors.length > 0) {
      const submitted = entries.find((e) => e.stage === 'ingest' && e.event === 'received');
      if (submitted?.detail !== actorsDetail(principal.actors)) return send(res, 404, NOT_FOUND);
    }
    return send(res, 200, outcomeView(await pipeline.outcome(traceId)), { 'cache-control': 'no-store' });
  }

  await new Promise<void>((resolve) => server.listen(opts.port, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  allowedHosts = new Set(
    (opts.allowedHosts ?? [`127.0.0.1:${port}`, `localhost:${port}`]).map((h) => h.toLowerCase()),
  );
  // Resumed work starts at once, not at the next submission.
  kick();
  let closing: Promise<void> | undefined;
  return {
    port,
    pipeline,
    limits,
    resumed,
    senderBacklog: (party) => ({ ...shares.of(party) }),
    idle: async () => {
      do await draining;
      while (running);
    },
    close: (timeoutMs = DEFAULT_STOP_TIMEOUT_MS) => {
      closing ??= (async () => {
        const deadline = Date.now() + timeoutMs;
        pipeline.stop();
        // Requests already being read finish (their 202 waits for a commit); idle connections go.
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const rest = () => new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - Date.now())));
        await Promise.race([Promise.all([closed, draining]), rest()]);
        server.closeAllConnections();
        state.close();
      })();
      return closing;
    },
  };
}

/** How the ingest audit entry names a delegated submission's actor chain (outermost first). */
function actorsDetail(actors: readonly string[]): string {
  return `actors:${JSON.stringify(actors)}`;
}

function checkLimits(limits: ListenerLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (name === 'backlogShare') continue;
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`serve: ${name} must be a positive integer, got ${value}`);
    }
  }
  if (!(limits.backlogShare > 0 && limits.backlogShare <= 1)) {
    throw new RangeError(`serve: backlogShare must be above 0 and at most 1, got ${limits.backlogShare}`);
  }
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) {
    throw new RangeError('serve: headersTimeoutMs must not exceed requestTimeoutMs');
  }
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, jsonHeaders(text, headers));
  res.end(text);
}

function jsonHeaders(text: string, headers: Record<string, string>): Record<string, string | number> {
  return { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers };
}

/**
 * How much of a refused request's unsent body is read and thrown away after the answer, and for how
 * long. Closing a socket with bytes still arriving makes the kernel reset it, and a client that
 * sends its whole body before reading (most HTTP libraries without `Expect: 100-continue`) then sees
 * ECONNRESET instead of the 401/413/503 already written. A small body is drained so the answer is
 * read; past either bound the connection is cut (nothing is stored or parsed either way).
 */
const LINGER_BYTES = 256 * 1024;
const LINGER_MS = 2_000;

/**
 * Answer a request whose body was not (all) read, then close its connection. The rest of the body
 * is discarded as it arrives, within {@link LINGER_BYTES} and {@link LINGER_MS}, and the
 * connection ends cleanly once it is all in; past either bound it is destroyed.
 */
function drop(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const req = res.req;
  const bodyless =
    req.headers['transfer-encoding'] === undefined && Number(req.headers['content-length'] ?? 0) === 0;
  if (req.complete || bodyless) {
    send(res, status, body, headers);
    return;
  }
  const socket = req.socket;
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  const text = JSON.stringify(body);
  if (declared > LINGER_BYTES) {
    // Too much to drain: answer and cut (a sender of a large body should use 100-continue).
    req.pause();
    res.shouldKeepAlive = false;
    res.writeHead(status, jsonHeaders(text, { connection: 'close', ...headers }));
    res.end(text, () => socket.destroy());
    return;
  }
  let discarded = 0;
  let bodyIn = false;
  let timer: NodeJS.Timeout | undefined;
  const cut = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > LINGER_BYTES) cut();
  });
  // Once the answer is out and the whole body in, nothing is left to reset the connection: it ends
  // with a FIN. The linger clock starts at the answer (a pipelined request before it may still be
  // answering: its response is written first).
  req.on('end', () => {
    bodyIn = true;
    if (res.writableFinished) {
      clearTimeout(timer);
      socket.end();
    }
  });
  res.on('finish', () => {
    if (bodyIn) {
      socket.end();
      return;
    }
    timer = setTimeout(cut, LINGER_MS);
    timer.unref();
  });
  req.resume();
  res.writeHead(status, jsonHeaders(text, headers));
  res.end(text);
}

/** Read a body of at most `max` bytes; undefined as soon as it is larger (the rest is not read). */
function readBodyWithin(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= max) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.off('end', onEnd);
      req.pause();
      chunks.length = 0;
      resolve(undefined);
    };
    const onEnd = () => resolve(Buffer.concat(chunks).toString('utf8'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', reject);
    // A client that goes away mid-body: nothing to ingest (resolving twice is harmless).
    req.on('close', () => {
      if (!req.complete) resolve(undefined);
    });
  });
}
