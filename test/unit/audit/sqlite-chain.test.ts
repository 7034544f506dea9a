/**
 * The embedded audit chain on a real demo run's state file: `itk3 audit verify` proves it, and
 * every tampering of a copy (by SQL, as an attacker with the file would) is caught with the first
 * bad entry named.
 */
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteState } from '../../../lib/adapters/local/sqlite-state.js';
import { type ChainBreak, linkHash, type StreamReport } from '../../../lib/audit/chain.js';
import { runDemo } from '../../../lib/cli/demo.js';
import { main } from '../../../lib/cli/main.js';
import type { AuditEntry } from '../../../lib/ports/index.js';

let root: string;
let demo: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'itk3-audit-chain-'));
  demo = join(root, 'demo');
  const result = await runDemo({ out: demo, recipientModulus: 2048, write: () => undefined });
  expect(result.allAsExpected).toBe(true);
}, 60_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Run `itk3 audit verify --json` on a folder; the exit code and the parsed report. */
async function verify(out: string): Promise<{ code: number; streams: StreamReport[] }> {
  const lines: string[] = [];
  const code = await main(
    ['audit', 'verify', '--out', out, '--keystore', join(demo, 'keystore.json'), '--json'],
    (l) => lines.push(l),
  );
  const parsed = JSON.parse(lines.join('\n')) as { proven: boolean; streams: StreamReport[] };
  expect(parsed.proven).toBe(code === 0);
  return { code, streams: parsed.streams };
}

let copies = 0;
/** A copy of the demo's state file, tampered with by `sql`; returns its folder. */
function tampered(sql: (db: Database.Database) => void): string {
  copies += 1;
  const dir = join(root, `copy-${copies}`);
  mkdirSync(dir);
  copyFileSync(join(demo, 'state.db'), join(dir, 'state.db'));
  const db = new Database(join(dir, 'state.db'));
  sql(db);
  db.close();
  return dir;
}

async function expectBreak(dir: string): Promise<ChainBreak> {
  const { code, streams } = await verify(dir);
  expect(code).toBe(1);
  expect(streams[0]!.break).toBeDefined();
  return streams[0]!.break!;
}

function checkpointRows(db: Database.Database): { n: number; jws: string }[] {
  return db.prepare('SELECT n, jws FROM audit_checkpoints ORDER BY n').all() as { n: number; jws: string }[];
}

describe('audit chain on a demo run (SQLite)', () => {
  it('proves the untouched trail, its head signed', async () => {
    const { code, streams } = await verify(demo);
    expect(code).toBe(0);
    expect(streams).toHaveLength(1);
    const [s] = streams;
    expect(s!.break).toBeUndefined();
    expect(s!.entries).toBeGreaterThan(40);
    expect(s!.checkpoints).toBeGreaterThanOrEqual(1);
    expect(s!.lastCheckpoint).toBe(s!.entries);
  });

  it('catches a deleted entry', async () => {
    const b = await expectBreak(tampered((db) => db.prepare('DELETE FROM audit WHERE seq = 10').run()));
    expect(b).toMatchObject({ firstBadEntry: 10, kind: 'missing' });
  });

  it('catches an altered field', async () => {
    const dir = tampered((db) =>
      db.prepare(`UPDATE audit SET entry = json_set(entry, '$.code', 'NOTHING_TO_SEE') WHERE seq = 12`).run(),
    );
    const b = await expectBreak(dir);
    expect(b).toMatchObject({ firstBadEntry: 12, kind: 'altered' });
    expect(b.entry?.code).toBe('NOTHING_TO_SEE');
  });

  it('catches two entries reordered by swapping their positions', async () => {
    const dir = tampered((db) => {
      db.prepare('UPDATE audit SET seq = -1 WHERE seq = 20').run();
      db.prepare('UPDATE audit SET seq = 20 WHERE seq = 21').run();
      db.prepare('UPDATE audit SET seq = 21 WHERE seq = -1').run();
    });
    expect(await expectBreak(dir)).toMatchObject({ firstBadEntry: 20, kind: 'altered' });
  });

  it('catches a truncated tail against the signed checkpoint', async () => {
    const dir = tampered((db) => {
      const last = checkpointRows(db).at(-1)!.n;
      db.prepare('DELETE FROM audit WHERE seq > ?').run(last - 5);
    });
    const b = await expectBreak(dir);
    expect(b.kind).toBe('truncated');
    const { streams } = await verify(demo);
    expect(b.firstBadEntry).toBe(streams[0]!.lastCheckpoint - 4);
  });

  it('catches an entry rewritten with its chain recomputed, by the signed checkpoint', async () => {
    const dir = tampered((db) => {
      const stream = (
        db.prepare("SELECT value FROM audit_meta WHERE key = 'stream'").get() as { value: string }
      ).value;
      const rows = db.prepare('SELECT seq, entry, prev FROM audit ORDER BY seq').all() as {
        seq: number;
        entry: string;
        prev: string;
      }[];
      const update = db.prepare('UPDATE audit SET entry = ?, prev = ?, hash = ? WHERE seq = ?');
      let prev = rows[0]!.prev;
      for (const row of rows) {
        const entry = JSON.parse(row.entry) as AuditEntry;
        if (row.seq === 7) entry.detail = 'rewritten';
        const hash = linkHash(stream, row.seq, prev, entry);
        update.run(JSON.stringify(entry), prev, hash, row.seq);
        prev = hash;
      }
    });
    const b = await expectBreak(dir);
    expect(b.kind).toBe('checkpoint-mismatch');
    expect(b.firstBadEntry).toBeLessThanOrEqual(7);
  });

  it('catches a forged checkpoint signature', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const dir = tampered((db) => {
      const cp = checkpointRows(db).at(-1)!;
      const [h, p] = cp.jws.split('.');
      const forged = sign('sha256', Buffer.from(`${h}.${p}`), {
        key: createPrivateKey(privateKey.export({ format: 'pem', type: 'pkcs8' })),
        dsaEncoding: 'ieee-p1363',
      }).toString('base64url');
      db.prepare('UPDATE audit_checkpoints SET jws = ? WHERE n = ?').run(`${h}.${p}.${forged}`, cp.n);
    });
    const b = await expectBreak(dir);
    expect(b.kind).toBe('bad-checkpoint');
    expect(b.reason).toMatch(/signature does not verify/);
  });

  it('catches a checkpoint replaced by another one of the same stream', async () => {
    const dir = tampered((db) => {
      const rows = checkpointRows(db);
      expect(rows.length).toBeGreaterThanOrEqual(2);
      db.prepare('UPDATE audit_checkpoints SET jws = ? WHERE n = ?').run(rows.at(-1)!.jws, rows[0]!.n);
    });
    const b = await expectBreak(dir);
    expect(b.kind).toBe('bad-checkpoint');
    expect(b.reason).toMatch(/replaced/);
  });

  it('refuses checkpoints when the keystore given is not the one that signed them', async () => {
    const lines: string[] = [];
    const other = join(root, 'other');
    await runDemo({ out: other, recipientModulus: 2048, write: () => undefined });
    const code = await main(
      ['audit', 'verify', '--out', demo, '--keystore', join(other, 'keystore.json'), '--json'],
      (l) => lines.push(l),
    );
    expect(code).toBe(1);
    expect(lines.join('')).toMatch(/"kind":"bad-checkpoint".*signature does not verify/);
  }, 60_000);
});

describe('audit chain and units of work', () => {
  const entry = (traceId: string, event: AuditEntry['event']): AuditEntry => ({
    traceId,
    at: new Date().toISOString(),
    stage: 'authenticate',
    event,
  });

  it('a unit of work rolled back leaves no hole: the next append continues the committed head', async () => {
    const dir = mkdtempSync(join(root, 'units-'));
    const file = join(dir, 'state.db');
    const clock = { now: () => Date.now() };
    let state = new SqliteState(file, { clock });
    await state.audit.append(entry('t1', 'received'));
    state.commit();
    // A statement failing inside a unit rolls the whole unit back (savepoint).
    expect(() =>
      state.transact(() => {
        void state.audit.append(entry('t2', 'received'));
        throw new Error('handler failed');
      }),
    ).toThrow('handler failed');
    // A held unit cut short by a stop is rolled back on close.
    state.hold();
    void state.audit.append(entry('t3', 'received'));
    state.close();

    state = new SqliteState(file, { clock });
    await state.audit.append(entry('t4', 'forwarded'));
    state.commit();
    const report = state.audit.verify(new Map());
    state.close();
    expect(report.break).toBeUndefined();
    expect(report.entries).toBe(2);
    const db = new Database(file, { readonly: true });
    expect(db.prepare('SELECT seq, trace_id FROM audit ORDER BY seq').all()).toEqual([
      { seq: 1, trace_id: 't1' },
      { seq: 2, trace_id: 't4' },
    ]);
    db.close();
  });
});

describe('appendOnce on the SQLite state', () => {
  const outcome = (traceId: string): AuditEntry[] => [
    { traceId, at: '2026-01-01T10:00:00.000Z', stage: 'authenticate', event: 'received' },
    { traceId, at: '2026-01-01T10:00:02.000Z', stage: 'deliver', event: 'delivered', sender: 'GP0001' },
    { traceId, at: '2026-01-01T10:00:02.000Z', stage: 'deliver', event: 'response-sent', itk3Code: '20013' },
  ];

  it('records an outcome once, its marker and entries in one unit: a rollback takes both', async () => {
    const file = join(mkdtempSync(join(root, 'once-')), 'state.db');
    const clock = { now: () => Date.now() };
    let state = new SqliteState(file, { clock });
    // Rolled back: neither the marker nor the entries survive, so a redelivery records it.
    expect(() =>
      state.transact(() => {
        void state.audit.appendOnce('deliver#delivered', outcome('t1'));
        throw new Error('handler failed');
      }),
    ).toThrow('handler failed');
    expect(await state.audit.appendOnce('deliver#delivered', outcome('t1'))).toBe(true);
    state.commit();
    state.close();

    state = new SqliteState(file, { clock });
    expect(await state.audit.appendOnce('deliver#delivered', outcome('t1'))).toBe(false);
    expect(
      await state.audit.appendOnce('verify#rejected', [{ ...outcome('t2')[0]!, event: 'rejected' }]),
    ).toBe(true);
    state.commit();
    expect((await state.audit.byTrace('t1')).map((e) => e.event)).toEqual([
      'received',
      'delivered',
      'response-sent',
    ]);
    const report = state.audit.verify(new Map());
    state.close();
    expect(report.break).toBeUndefined();
    expect(report.entries).toBe(4);
  });
});

describe('itk3 audit verify exit codes', () => {
  it('0 proven, 1 broken, 2 usage', async () => {
    const quiet = () => undefined;
    const ks = join(demo, 'keystore.json');
    expect(await main(['audit', 'verify', '--out', demo, '--keystore', ks], quiet)).toBe(0);
    const broken = tampered((db) => db.prepare('DELETE FROM audit WHERE seq = 3').run());
    const lines: string[] = [];
    expect(await main(['audit', 'verify', '--out', broken, '--keystore', ks], (l) => lines.push(l))).toBe(1);
    expect(lines.join('\n')).toMatch(/first bad entry 3: missing/);
    expect(await main(['audit', 'verify', '--out', join(root, 'nowhere')], quiet)).toBe(2);
    expect(await main(['audit'], quiet)).toBe(2);
    expect(await main(['audit', 'verify', 'extra'], quiet)).toBe(2);
    expect(await main(['audit', 'verify', '--bogus'], quiet)).toBe(2);
  });
});
