/**
 * The operator console's HTTP side (`itk3 serve --console`): a real listener over a demo-like run
 * (delivered, refused at verify, dead-lettered at deliver). The token guards every data endpoint
 * and the one write (redrive); the Host allow-list and cross-site checks hold; the answers carry
 * audit facts only, never credentials or message content. The browser side is
 * test/browser/console.test.ts.
 */
import '../../support/env.js';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, startServer } from '../../../lib/cli/serve.js';
import { countPerMinute } from '../../../lib/console/server.js';
import {
  generateOperatorToken,
  operatorTokenFromFile,
  operatorTokenMatches,
} from '../../../lib/console/token.js';
import { UsageError } from '../../../lib/errors.js';
import type { AuditEntry } from '../../../lib/ports/index.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { startServe, writeWorld } from '../../durability/support.js';
import { type ConsoleRun, startConsoleRun } from '../../support/console.js';
import { credentialFor, keyService, makeTempDir, removeTempDirs, testWorld } from '../../support/world.js';

let world: DemoWorld;
let run: ConsoleRun;

beforeAll(async () => {
  world = await testWorld();
  run = await startConsoleRun(world);
});
afterAll(async () => {
  await run?.server.close();
  removeTempDirs();
});

function api(path: string, init: RequestInit & { token?: string | null } = {}) {
  const { token = run.token, headers, ...rest } = init;
  return fetch(`${run.origin}/console/api${path}`, {
    ...rest,
    headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...headers },
  });
}

async function json<T>(path: string, init: RequestInit & { token?: string | null } = {}): Promise<T> {
  const response = await api(path, init);
  expect(response.status).toBe(200);
  const text = await response.text();
  // Audit facts only: no credential or sealed message sent in this run ever comes back.
  for (const secret of run.secrets) expect(text).not.toContain(secret);
  return JSON.parse(text) as T;
}

/** A request with any Host header (fetch will not send a chosen one). */
function withHost(host: string, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: run.server.port, path, headers: { host, authorization: `Bearer ${token}` } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

interface TraceSummary {
  traceId: string;
  status: string;
  stage?: string;
  code?: string;
  itk3Code?: string;
  sender?: string;
  recipient?: string;
}
interface DeadLetterRow {
  stage: string;
  messageId: string;
  traceId: string;
  reason: string;
}

describe('operator console: access', () => {
  it('every data endpoint needs the operator token: none, a wrong one or a sender credential is 401', async () => {
    const senderCredential = await credentialFor(world, 'X26', Date.now());
    for (const path of ['/traces', `/traces/${run.traces.hostile}`, '/dead-letters', '/counts']) {
      for (const token of [null, generateOperatorToken(), senderCredential, `${run.token}x`, '']) {
        const response = await api(path, { token });
        expect(response.status, `${path} with ${token === null ? 'no token' : 'a wrong token'}`).toBe(401);
        expect(response.headers.get('www-authenticate')).toBe('Bearer realm="itk3-console"');
        expect(await response.text()).not.toContain('traceId');
      }
      expect((await api(path)).status).toBe(200);
    }
    // The scheme is case-insensitive (RFC 7235); the token is not.
    const lower = await api('/traces', { token: null, headers: { authorization: `bearer ${run.token}` } });
    expect(lower.status).toBe(200);
    const upper = await api('/traces', { token: run.token.toUpperCase() });
    expect(upper.status).toBe(401);
  });

  it('redrive without the token (or with a wrong one) is 401 and moves nothing', async () => {
    const before = await json<{ deadLetters: DeadLetterRow[] }>('/dead-letters');
    const letter = before.deadLetters[0]!;
    const path = `/dead-letters/${letter.stage}/${letter.messageId}/redrive`;
    expect((await api(path, { method: 'POST', token: null })).status).toBe(401);
    expect((await api(path, { method: 'POST', token: generateOperatorToken() })).status).toBe(401);
    expect((await json<{ deadLetters: DeadLetterRow[] }>('/dead-letters')).deadLetters).toEqual(
      before.deadLetters,
    );
    const audit = await run.server.pipeline.audit.byTrace(letter.traceId);
    expect(audit.some((e) => e.event === 'redriven')).toBe(false);
  });

  it("obeys serve's Host allow-list, token or not", async () => {
    expect(await withHost('evil.example', '/console/api/traces', run.token)).toBe(421);
    expect(await withHost(`attacker.test:${run.server.port}`, '/console/', run.token)).toBe(421);
    expect(await withHost(`localhost:${run.server.port}`, '/console/api/traces', run.token)).toBe(200);
  });

  it('refuses what a browser marks cross-site, answers no CORS preflight and takes no body', async () => {
    const crossOrigin = await api('/traces', { headers: { origin: 'http://evil.example' } });
    expect(crossOrigin.status).toBe(403);
    const crossSite = await api('/traces', { headers: { 'sec-fetch-site': 'cross-site' } });
    expect(crossSite.status).toBe(403);
    const sameOrigin = await api('/traces', {
      headers: { origin: run.origin, 'sec-fetch-site': 'same-origin' },
    });
    expect(sameOrigin.status).toBe(200);

    const preflight = await api('/traces', {
      method: 'OPTIONS',
      token: null,
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(preflight.status).not.toBe(200);
    expect(preflight.status).not.toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    expect(sameOrigin.headers.get('access-control-allow-origin')).toBeNull();

    const withBody = await api('/traces', { method: 'GET', headers: { 'content-length': '0' } });
    expect(withBody.status).toBe(200);
    const posted = await api('/dead-letters/deliver/x/redrive', { method: 'POST', body: 'payload' });
    expect(posted.status).toBe(400);
  });

  it('serves the page with its security headers, and nothing outside the console’s files', async () => {
    const page = await fetch(`${run.origin}/console/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('cache-control')).toBe('no-store');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await page.text();
    // No inline script: the only script is the module from this origin.
    expect(html.match(/<script\b[^>]*>/g)).toEqual(['<script type="module" src="/console/app.js">']);

    for (const asset of [
      '/console/app.js',
      '/console/vendor/preact.js',
      '/console/vendor/htm.js',
      '/console/vendor/uplot.js',
    ]) {
      const response = await fetch(`${run.origin}${asset}`);
      expect(response.status, asset).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/javascript/);
      expect(response.headers.get('content-security-policy')).toBe(csp);
    }
    expect((await fetch(`${run.origin}/console/vendor/uplot.css`)).status).toBe(200);
    expect((await fetch(`${run.origin}/console`, { redirect: 'manual' })).headers.get('location')).toBe(
      '/console/',
    );
    for (const probe of [
      '/console/../package.json',
      '/console/%2e%2e/package.json',
      '/console/vendor/jose.js',
      '/console/server.ts',
    ]) {
      expect((await fetch(`${run.origin}${probe}`)).status, probe).toBe(404);
    }
    expect((await fetch(`${run.origin}/console/app.js`, { method: 'POST' })).status).toBe(405);
  });

  it('is off unless asked for: /console is then an unknown path', async () => {
    const server: RunningServer = await startServer({
      config: world.config,
      keys: keyService(world),
      baseDir: makeTempDir('itk3-console-off-'),
      port: 0,
    });
    try {
      expect((await fetch(`http://127.0.0.1:${server.port}/console/`)).status).toBe(404);
      const response = await fetch(`http://127.0.0.1:${server.port}/console/api/traces`, {
        headers: { authorization: `Bearer ${run.token}` },
      });
      expect(response.status).toBe(404);
    } finally {
      await server.close();
    }
  });
});

describe('operator console: what it shows', () => {
  it('lists recent traces, newest first, with their outcome', async () => {
    const { traces } = await json<{ traces: TraceSummary[] }>('/traces');
    const byId = new Map(traces.map((t) => [t.traceId, t]));
    for (const id of run.traces.delivered) {
      expect(byId.get(id)).toMatchObject({ status: 'delivered', stage: 'deliver', itk3Code: '20013' });
    }
    expect(byId.get(run.traces.hostile)).toMatchObject({
      status: 'rejected',
      stage: 'verify',
      code: 'SIGNATURE_KEY_NOT_SENDERS',
      itk3Code: '20012',
      sender: 'X26',
      recipient: 'A83627',
    });
    expect(byId.get(run.traces.policyDenied)).toMatchObject({
      status: 'rejected',
      stage: 'authorise',
      code: 'POLICY_DENIED',
      itk3Code: '20012',
    });
    expect(byId.get(run.traces.duplicate)).toMatchObject({
      status: 'rejected',
      stage: 'verify',
      code: 'DUPLICATE_MESSAGE',
      itk3Code: '20007',
    });
    expect(byId.get(run.traces.deadLettered)).toMatchObject({
      status: 'dead-lettered',
      stage: 'deliver',
      code: 'DELIVERY_UNAVAILABLE',
    });
    // Submitted in this order, so the dead-lettered one had the latest activity.
    expect(traces.map((t) => t.traceId).indexOf(run.traces.delivered[0]!)).toBeGreaterThan(
      traces.map((t) => t.traceId).indexOf(run.traces.deadLettered),
    );
    const limited = await json<{ traces: TraceSummary[] }>('/traces?limit=2');
    expect(limited.traces).toHaveLength(2);
    for (const bad of ['0', '201', 'x', '-1', '1e3']) {
      expect((await api(`/traces?limit=${bad}`)).status, bad).toBe(400);
    }
  });

  it("shows a trace's timeline: stage, event, time and codes, and only the audit's known fields", async () => {
    const { trace, timeline } = await json<{ trace: TraceSummary; timeline: AuditEntry[] }>(
      `/traces/${run.traces.hostile}`,
    );
    expect(trace).toMatchObject({ status: 'rejected', stage: 'verify' });
    expect(timeline.map((e) => `${e.stage}:${e.event}`)).toEqual([
      'ingest:received',
      'authenticate:received',
      'verify:rejected',
      'deliver:response-sent',
    ]);
    const known = new Set([
      'at',
      'stage',
      'event',
      'code',
      'itk3Code',
      'messageId',
      'sender',
      'recipient',
      'ruleId',
      'detail',
    ]);
    for (const entry of timeline) {
      for (const key of Object.keys(entry)) expect(known.has(key), key).toBe(true);
      expect(Number.isNaN(Date.parse(entry.at))).toBe(false);
    }
    expect((await api('/traces/00000000-0000-4000-8000-000000000000')).status).toBe(404);
    expect((await api('/traces/not%20an%20id')).status).toBe(404);
  });

  it('lists dead letters with their reason, never their bodies', async () => {
    const { deadLetters } = await json<{ deadLetters: DeadLetterRow[] }>('/dead-letters');
    expect(deadLetters).toEqual([
      expect.objectContaining({
        stage: 'deliver',
        traceId: run.traces.deadLettered,
        reason: 'DELIVERY_UNAVAILABLE',
      }),
    ]);
    expect(Object.keys(deadLetters[0]!).sort()).toEqual(
      ['deadLetteredAt', 'messageId', 'reason', 'stage', 'traceId'].sort(),
    );
  });

  it('counts outcomes per deciding stage and ITK3 code per minute', async () => {
    const counts = await json<{
      minutes: number[];
      stages: Record<string, number[]>;
      itk3Codes: Record<string, number[]>;
    }>('/counts?minutes=10');
    expect(counts.minutes).toHaveLength(10);
    expect(counts.minutes[9]! - counts.minutes[0]!).toBe(9 * 60);
    const total = (series: number[] | undefined) => (series ?? []).reduce((a, b) => a + b, 0);
    expect(total(counts.stages.deliver)).toBeGreaterThanOrEqual(3); // 2 delivered, 1 dead-lettered
    expect(total(counts.stages.verify)).toBeGreaterThanOrEqual(1);
    expect(total(counts.itk3Codes['20013'])).toBeGreaterThanOrEqual(2);
    expect(total(counts.itk3Codes['20012'])).toBeGreaterThanOrEqual(1);
    for (const bad of ['0', '1441', 'ten'])
      expect((await api(`/counts?minutes=${bad}`)).status, bad).toBe(400);
  });
});

describe('operator console: redrive', () => {
  it('redrives a dead letter through the runtime, audited as the operator’s, and the trace runs again', async () => {
    const { deadLetters } = await json<{ deadLetters: DeadLetterRow[] }>('/dead-letters');
    const letter = deadLetters.find((l) => l.traceId === run.traces.deadLettered)!;
    const path = `/dead-letters/${letter.stage}/${letter.messageId}/redrive`;
    expect((await api(path)).status).toBe(405); // GET is not a redrive
    const response = await api(path, { method: 'POST' });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ redriven: letter.messageId, stage: 'deliver' });

    const audit = await run.server.pipeline.audit.byTrace(letter.traceId);
    expect(audit.filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', event: 'redriven', detail: 'back to deliver by console' }),
    ]);
    // It ran again: the target is still unreachable, so it is dead-lettered a second time.
    await run.server.idle();
    const { timeline } = await json<{ timeline: AuditEntry[] }>(`/traces/${letter.traceId}`);
    const events = timeline.map((e) => e.event);
    expect(events.lastIndexOf('dead-lettered')).toBeGreaterThan(events.indexOf('redriven'));

    // Nothing to redrive under another stage or an unknown id.
    const after = (await json<{ deadLetters: DeadLetterRow[] }>('/dead-letters')).deadLetters[0]!;
    expect((await api(`/dead-letters/verify/${after.messageId}/redrive`, { method: 'POST' })).status).toBe(
      404,
    );
    expect((await api('/dead-letters/deliver/no-such-message/redrive', { method: 'POST' })).status).toBe(404);
    expect((await api(`/dead-letters/nowhere/${after.messageId}/redrive`, { method: 'POST' })).status).toBe(
      404,
    );
  });
});

describe('itk3 serve --console / --operator-token-file', () => {
  async function stopped(server: Awaited<ReturnType<typeof startServe>>) {
    server.proc.kill('SIGTERM');
    return server.exited;
  }
  const tokenWorks = async (port: number, token: string) =>
    (
      await fetch(`http://127.0.0.1:${port}/console/api/traces`, {
        headers: { authorization: `Bearer ${token}` },
      })
    ).status;

  it('--console generates a token and shows it once on stderr; --operator-token-file keeps it in a 0600 file', async () => {
    const dir = makeTempDir('itk3-console-cli-');
    const files = writeWorld(world, join(dir, 'world'));

    const shown = await startServe(files, join(dir, 'run-a'), ['--console']);
    const waitForToken = async () => {
      for (let i = 0; i < 100; i += 1) {
        const m = /operator token \(shown once, kept nowhere\): (\S+)\n/.exec(shown.stderr.join(''));
        if (m) return m[1]!;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`no token on stderr: ${shown.stderr.join('')}`);
    };
    const token = await waitForToken();
    expect(shown.stdout).toContain(`operator console: http://127.0.0.1:${shown.port}/console/`);
    expect(shown.stdout.join('\n')).not.toContain(token);
    expect(await tokenWorks(shown.port, token)).toBe(200);
    expect(await tokenWorks(shown.port, generateOperatorToken())).toBe(401);
    expect((await stopped(shown)).code).toBe(0);
    expect(shown.stderr.join('').split(token)).toHaveLength(2); // shown exactly once

    const tokenFile = join(dir, 'operator-token');
    const kept = await startServe(files, join(dir, 'run-b'), ['--operator-token-file', tokenFile]);
    const fromFile = readFileSync(tokenFile, 'utf8').trim();
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(await tokenWorks(kept.port, fromFile)).toBe(200);
    expect((await stopped(kept)).code).toBe(0);
    const output = [...kept.stdout, ...kept.stderr].join('');
    expect(output).toContain(`operator token generated into ${tokenFile}`);
    expect(output).not.toContain(fromFile);
  });
});

describe('operator token', () => {
  it('is generated into a missing file with mode 0600 and read back from it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'itk3-token-'));
    const file = join(dir, 'operator-token');
    const created = operatorTokenFromFile(file);
    expect(created.generated).toBe(true);
    expect(created.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim()).toBe(created.token);
    expect(operatorTokenFromFile(file)).toEqual({ token: created.token, generated: false });
  });

  it('refuses a file others can read, and a token too short or not header-safe', () => {
    const dir = mkdtempSync(join(tmpdir(), 'itk3-token-'));
    const open = join(dir, 'open');
    writeFileSync(open, `${generateOperatorToken()}\n`, { mode: 0o600 });
    chmodSync(open, 0o644);
    expect(() => operatorTokenFromFile(open)).toThrow(/readable by others \(mode 644\); run chmod 600/);
    for (const bad of ['short', 'a b c d e f g h i j k l m n o p q r s t u v w', `${'x'.repeat(40)}\u00e9`]) {
      const file = join(dir, `bad-${Math.random()}`);
      writeFileSync(file, bad, { mode: 0o600 });
      expect(() => operatorTokenFromFile(file)).toThrow(UsageError);
    }
  });

  it('compares in constant time over hashes: equal only for the same token', () => {
    const token = generateOperatorToken();
    expect(operatorTokenMatches(token, token)).toBe(true);
    expect(operatorTokenMatches(token, `${token} `)).toBe(false);
    expect(operatorTokenMatches(token, token.slice(0, -1))).toBe(false);
    expect(operatorTokenMatches(token, undefined)).toBe(false);
    expect(operatorTokenMatches(token, '')).toBe(false);
  });
});

describe('per-minute counts', () => {
  it('buckets terminal events by minute, ignores what is outside the window, and counts 20013 once per ack', () => {
    const now = Date.parse('2026-01-01T10:05:30Z');
    const entry = (
      at: string,
      stage: AuditEntry['stage'],
      event: AuditEntry['event'],
      itk3Code?: string,
    ): AuditEntry => ({
      traceId: 't',
      at,
      stage,
      event,
      ...(itk3Code ? { itk3Code } : {}),
    });
    const counts = countPerMinute(
      [
        entry('2026-01-01T10:01:59Z', 'verify', 'rejected', '20012'), // before the window
        entry('2026-01-01T10:02:00Z', 'authenticate', 'rejected', '20012'),
        entry('2026-01-01T10:02:10Z', 'deliver', 'response-sent', '20012'), // the same rejection's response
        entry('2026-01-01T10:05:01Z', 'deliver', 'delivered'),
        entry('2026-01-01T10:05:01Z', 'deliver', 'response-sent', '20013'),
        entry('2026-01-01T10:05:02Z', 'authenticate', 'received'),
        entry('2026-01-01T10:05:03Z', 'operator', 'redriven'),
        entry('2026-01-01T10:06:00Z', 'deliver', 'delivered'), // after now
      ],
      now,
      4,
    );
    expect(counts.minutes.map((m) => new Date(m * 1000).toISOString().slice(11, 16))).toEqual([
      '10:02',
      '10:03',
      '10:04',
      '10:05',
    ]);
    expect(counts.stages.authenticate).toEqual([1, 0, 0, 0]);
    expect(counts.stages.deliver).toEqual([0, 0, 0, 1]);
    expect(counts.stages.verify).toEqual([0, 0, 0, 0]);
    expect(counts.itk3Codes).toEqual({ '20012': [1, 0, 0, 0], '20013': [0, 0, 0, 1] });
  });
});
