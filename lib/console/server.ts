/**
 * The local operator console of `itk3 serve --console` (docs/CONSOLE.md): recent traces with their
 * stage timeline and outcome, dead letters with their reasons and a redrive button, and counts per
 * stage and ITK3 code per minute.
 *
 * Mounted under `/console/` on serve's own listener, so it has serve's loopback bind, Host
 * allow-list and connection limits. The page itself (HTML, the client module, the vendored
 * libraries from node_modules) holds no data and is served to anyone who can reach the listener —
 * a browser navigation cannot carry a bearer token. Every data endpoint, `/console/api/…`, needs
 * `Authorization: Bearer <operator token>`, compared in constant time; the client keeps the token
 * in sessionStorage and sends it in that header, never in a cookie, so a cross-site page can make
 * no authenticated request (and no CORS header is ever sent, so it cannot read one either).
 *
 * Read only, but for one write: redrive of a dead letter through the dead-letter port
 * (lib/ops/dead-letters.ts, the runtime's own redrive underneath), which audits it as the
 * operator's. What is shown comes from the audit trail (never message bytes,
 * tokens, keys or patient data: only stage, event, time, codes, ODS codes, rule ids and message
 * ids that pass the FHIR id rule) and from the DLQs (ids and reasons, never bodies).
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeadLetters } from '../ops/dead-letters.js';
import { STAGES, type StageName } from '../pipeline/topology.js';
import { type AuditEntry, safeAuditEntry } from '../ports/index.js';
import type { EmbeddedPipeline } from '../runtime/embedded.js';
import { operatorTokenMatches } from './token.js';

/** What the console reads from the audit trail (the SQLite state's audit log provides it). */
interface ConsoleAuditSource {
  /** Ids of the traces with the latest activity, newest first. */
  recentTraceIds(limit: number): string[];
  /** The newest `limit` entries, oldest first. */
  latest(limit: number): AuditEntry[];
  byTrace(traceId: string): Promise<AuditEntry[]>;
}

export interface ConsoleOptions {
  token: string;
  audit: ConsoleAuditSource;
  pipeline: Pick<EmbeddedPipeline, 'outcome'>;
  /** The run's dead letters: listed and redriven through the dead-letter port, as `itk3 dlq` does. */
  deadLetters: DeadLetters;
  /** Called after a redrive moved a message: start working on it. */
  onRedrive: () => void;
  /** @default Date.now */
  now?: () => number;
}

export type ConsoleHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>;

/** The fields of an audit entry the console shows; anything else an entry carries is not sent. */
interface TimelineEntry {
  at: string;
  stage: string;
  event: string;
  code?: string;
  itk3Code?: string;
  messageId?: string;
  sender?: string;
  recipient?: string;
  ruleId?: string;
  detail?: string;
}

interface TraceSummary {
  traceId: string;
  firstAt: string;
  lastAt: string;
  status: string;
  stage?: string;
  code?: string;
  itk3Code?: string;
  messageId?: string;
  sender?: string;
  recipient?: string;
}

export interface MinuteCounts {
  /** Start of each one-minute bucket, in seconds since the epoch, oldest first. */
  minutes: number[];
  /** Outcomes decided by each stage (rejected, delivered, dead-lettered) per minute. */
  stages: Record<StageName, number[]>;
  /** The ITK3 code of each outcome (a rejection's code, 20013 for an acknowledged delivery) per minute. */
  itk3Codes: Record<string, number[]>;
}

const CONSOLE_LIMITS = {
  /** Traces listed by default and at most. */
  defaultTraces: 50,
  maxTraces: 200,
  /** Minutes of counts by default and at most. */
  defaultMinutes: 30,
  maxMinutes: 24 * 60,
  /** Audit entries read for the counts, at most (the newest). */
  maxCountedEntries: 100_000,
} as const;

/**
 * Served with every console response. The CSP allows scripts and styles from this origin only (no
 * inline script, no eval), connections to this origin only, no framing, no forms, no plugins.
 */
const CONSOLE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const ID = /^[A-Za-z0-9-]{1,64}$/;
const BEARER = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;
const TERMINAL_EVENTS = new Set(['rejected', 'delivered', 'dead-lettered']);

interface StaticFile {
  path: string;
  type: string;
}

/** The page and the libraries it loads, by URL path; nothing else is read from disk. */
function staticFiles(): Record<string, StaticFile> {
  const require = createRequire(import.meta.url);
  const assets = join(dirname(fileURLToPath(import.meta.url)), 'assets');
  const js = 'text/javascript; charset=utf-8';
  const css = 'text/css; charset=utf-8';
  return {
    '/console/': { path: join(assets, 'index.html'), type: 'text/html; charset=utf-8' },
    '/console/app.js': { path: join(assets, 'app.js'), type: js },
    '/console/console.css': { path: join(assets, 'console.css'), type: css },
    '/console/favicon.svg': { path: join(assets, 'favicon.svg'), type: 'image/svg+xml' },
    '/console/vendor/preact.js': { path: require.resolve('preact'), type: js },
    // htm's package exports name only its CommonJS build; its ES module sits beside it.
    '/console/vendor/htm.js': { path: join(dirname(require.resolve('htm')), 'htm.module.js'), type: js },
    '/console/vendor/uplot.js': { path: require.resolve('uplot/dist/uPlot.esm.js'), type: js },
    '/console/vendor/uplot.css': { path: require.resolve('uplot/dist/uPlot.min.css'), type: css },
  };
}

export function createConsole(opts: ConsoleOptions): ConsoleHandler {
  const now = opts.now ?? Date.now;
  const files = staticFiles();
  const cache = new Map<string, Buffer>();

  function authorised(req: IncomingMessage): boolean {
    return operatorTokenMatches(opts.token, BEARER.exec(req.headers.authorization ?? '')?.[1]);
  }

  return async (req, res, url) => {
    const path = url.pathname;
    if (path === '/console') return redirect(res, '/console/');
    if (!path.startsWith('/console/api/')) {
      const file = files[path];
      if (!file) return sendJson(res, 404, { error: 'NOT_FOUND', message: 'no such console page' });
      if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(res, 'GET, HEAD');
      let bytes = cache.get(path);
      if (!bytes) {
        bytes = readFileSync(file.path);
        cache.set(path, bytes);
      }
      res.writeHead(200, {
        ...CONSOLE_SECURITY_HEADERS,
        'content-type': file.type,
        'content-length': bytes.length,
      });
      res.end(req.method === 'HEAD' ? undefined : bytes);
      return;
    }

    // Data endpoints. Defence in depth on top of the bearer token: a browser's cross-site request
    // says so (Origin, Sec-Fetch-Site), and no request here carries a body.
    if (!isLoopback(req.socket.remoteAddress)) {
      return sendJson(res, 403, { error: 'FORBIDDEN', message: 'the console is for loopback clients' });
    }
    if (crossSite(req)) {
      return sendJson(res, 403, { error: 'FORBIDDEN', message: 'cross-site requests are refused' });
    }
    if (!authorised(req)) {
      return sendJson(
        res,
        401,
        { error: 'UNAUTHENTICATED', message: 'send the operator token as Authorization: Bearer <token>' },
        { 'www-authenticate': 'Bearer realm="itk3-console"' },
      );
    }
    if (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0) {
      res.shouldKeepAlive = false;
      return sendJson(res, 400, { error: 'BODY_NOT_ALLOWED', message: 'console requests have no body' });
    }

    const api = path.slice('/console/api'.length);
    if (api === '/traces') {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      const limit = boundedInteger(
        url.searchParams.get('limit'),
        CONSOLE_LIMITS.defaultTraces,
        CONSOLE_LIMITS.maxTraces,
      );
      if (limit === undefined) return badParameter(res, 'limit', CONSOLE_LIMITS.maxTraces);
      return sendJson(res, 200, { traces: await recentTraces(limit) });
    }
    const trace = /^\/traces\/([^/]+)$/.exec(api);
    if (trace) {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      const traceId = trace[1]!;
      const entries = ID.test(traceId) ? await opts.audit.byTrace(traceId) : [];
      if (entries.length === 0) return sendJson(res, 404, { error: 'NOT_FOUND', message: 'unknown trace' });
      return sendJson(res, 200, {
        trace: summarise(traceId, entries, await opts.pipeline.outcome(traceId)),
        timeline: entries.map(timelineEntry),
      });
    }
    if (api === '/dead-letters') {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      return sendJson(res, 200, { deadLetters: await deadLetters() });
    }
    const redrive = /^\/dead-letters\/([a-z]+)\/([^/]+)\/redrive$/.exec(api);
    if (redrive) {
      if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
      const stage = redrive[1] as StageName;
      const messageId = redrive[2]!;
      if (!(STAGES as readonly string[]).includes(stage) || !ID.test(messageId)) {
        return sendJson(res, 404, { error: 'NOT_FOUND', message: 'no such dead letter' });
      }
      const moved = await opts.deadLetters.redrive(stage, messageId, 'console');
      if (moved.length === 0)
        return sendJson(res, 404, { error: 'NOT_FOUND', message: 'no such dead letter' });
      opts.onRedrive();
      return sendJson(res, 200, { redriven: messageId, stage });
    }
    if (api === '/counts') {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      const minutes = boundedInteger(
        url.searchParams.get('minutes'),
        CONSOLE_LIMITS.defaultMinutes,
        CONSOLE_LIMITS.maxMinutes,
      );
      if (minutes === undefined) return badParameter(res, 'minutes', CONSOLE_LIMITS.maxMinutes);
      return sendJson(
        res,
        200,
        countPerMinute(opts.audit.latest(CONSOLE_LIMITS.maxCountedEntries), now(), minutes),
      );
    }
    return sendJson(res, 404, { error: 'NOT_FOUND', message: 'no such console endpoint' });
  };

  async function recentTraces(limit: number): Promise<TraceSummary[]> {
    const out: TraceSummary[] = [];
    for (const traceId of opts.audit.recentTraceIds(limit)) {
      const entries = await opts.audit.byTrace(traceId);
      if (entries.length > 0) out.push(summarise(traceId, entries, await opts.pipeline.outcome(traceId)));
    }
    return out;
  }

  /** The fields the page shows; a trace id that is not an id is shown as the message id. */
  async function deadLetters() {
    return (await opts.deadLetters.list()).map((l) => ({
      stage: l.stage,
      messageId: l.messageId,
      traceId: ID.test(l.traceId) ? l.traceId : l.messageId,
      reason: l.reason,
      deadLetteredAt: l.deadLetteredAt ?? l.sentAt,
    }));
  }
}

/** One audit entry as the console shows it: the known fields only, bounded as the audit bounds them. */
function timelineEntry(raw: AuditEntry): TimelineEntry {
  const e = safeAuditEntry(raw);
  const out: TimelineEntry = { at: e.at, stage: e.stage, event: e.event };
  for (const field of ['code', 'itk3Code', 'messageId', 'sender', 'recipient', 'ruleId', 'detail'] as const) {
    const value = e[field];
    if (typeof value === 'string') out[field] = value;
  }
  return out;
}

function summarise(
  traceId: string,
  raw: readonly AuditEntry[],
  outcome: { status: string; stage?: string; code?: string; itk3Code?: string; messageId?: string },
): TraceSummary {
  const entries = raw.map(timelineEntry);
  const first = (field: 'sender' | 'recipient' | 'messageId') => entries.find((e) => e[field])?.[field];
  const summary: TraceSummary = {
    traceId,
    firstAt: entries[0]!.at,
    lastAt: entries.at(-1)!.at,
    status: outcome.status,
  };
  if (outcome.stage) summary.stage = outcome.stage;
  if (outcome.code) summary.code = outcome.code;
  if (outcome.itk3Code) summary.itk3Code = outcome.itk3Code;
  const messageId = first('messageId');
  if (messageId) summary.messageId = messageId;
  const sender = first('sender');
  if (sender) summary.sender = sender;
  const recipient = first('recipient');
  if (recipient) summary.recipient = recipient;
  return summary;
}

/**
 * Per one-minute bucket over the last `minutes` minutes (the current one included): the outcomes
 * each stage decided, and the ITK3 code of each outcome — a rejection's code, or 20013 when a
 * delivery was acknowledged (its `response-sent` entry).
 */
export function countPerMinute(entries: readonly AuditEntry[], now: number, minutes: number): MinuteCounts {
  const currentMinute = Math.floor(now / 60_000);
  const firstMinute = currentMinute - minutes + 1;
  const stages = Object.fromEntries(STAGES.map((s) => [s, new Array<number>(minutes).fill(0)])) as Record<
    StageName,
    number[]
  >;
  const itk3Codes: Record<string, number[]> = {};
  for (const entry of entries) {
    const minute = Math.floor(Date.parse(entry.at) / 60_000);
    if (!(minute >= firstMinute && minute <= currentMinute)) continue;
    const i = minute - firstMinute;
    if (TERMINAL_EVENTS.has(entry.event) && (STAGES as readonly string[]).includes(entry.stage)) {
      stages[entry.stage as StageName][i]! += 1;
    }
    const code =
      entry.event === 'rejected'
        ? entry.itk3Code
        : entry.event === 'response-sent' && entry.itk3Code === '20013'
          ? '20013'
          : undefined;
    if (code && /^\d{5}$/.test(code)) {
      itk3Codes[code] ??= new Array<number>(minutes).fill(0);
      itk3Codes[code][i]! += 1;
    }
  }
  const starts = Array.from({ length: minutes }, (_, i) => (firstMinute + i) * 60);
  return { minutes: starts, stages, itk3Codes };
}

function isLoopback(address: string | undefined): boolean {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

/** A browser request from another site, by what the browser itself says. */
function crossSite(req: IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return true;
  const origin = req.headers.origin;
  return origin !== undefined && origin !== `http://${req.headers.host ?? ''}`;
}

function boundedInteger(value: string | null, fallback: number, max: number): number | undefined {
  if (value === null) return fallback;
  if (!/^\d{1,6}$/.test(value)) return undefined;
  const n = Number(value);
  return n >= 1 && n <= max ? n : undefined;
}

function badParameter(res: ServerResponse, name: string, max: number): void {
  sendJson(res, 400, { error: 'BAD_PARAMETER', message: `${name} must be an integer from 1 to ${max}` });
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  sendJson(res, 405, { error: 'METHOD_NOT_ALLOWED', message: `use ${allow}` }, { allow });
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(308, { ...CONSOLE_SECURITY_HEADERS, location, 'content-length': 0 });
  res.end();
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...CONSOLE_SECURITY_HEADERS,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}
