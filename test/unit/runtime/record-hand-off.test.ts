/**
 * The in-process record hand-off of the embedded runtime: a record a stage forwards rides to the
 * next stage's first receive as an object beside its stored body, so that stage skips the JSON
 * parse and schema check. The stored body stays the truth: after a restart, a redelivery or a
 * dead-letter move the body is read back and parsed as before, and the handed-over record must
 * be exactly what parsing its body gives.
 */
import '../../support/env.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteState } from '../../../lib/adapters/local/sqlite-state.js';
import { submitScenarioMessage } from '../../../lib/cli/demo.js';
import { STAGES } from '../../../lib/pipeline/topology.js';
import {
  handOverRecord,
  type PipelineRecord,
  parseRecord,
  RECORD_VERSION,
  serialiseRecord,
  takeHandedOverRecord,
} from '../../../lib/record.js';
import { type EmbeddedPipeline, VirtualClock } from '../../../lib/runtime/embedded.js';
import { MemoryQueue } from '../../../lib/runtime/memory-queue.js';
import type { RuntimeState, StageQueue } from '../../../lib/runtime/state.js';
import { buildScenario } from '../../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { queueWithDlq } from '../../support/records.js';
import { embeddedPipeline, makeTempDir, removeTempDirs, testWorld } from '../../support/world.js';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

function record(traceId: string): PipelineRecord {
  return {
    v: RECORD_VERSION,
    traceId,
    receivedAt: 1_000_000,
    source: 'cli',
    sealed: { inline: 'a'.repeat(2000) },
  };
}

function stageQueue(state: RuntimeState, dead: string[] = []): StageQueue {
  return queueWithDlq(state, (m) => dead.push(m.body)).q;
}

describe('SQLite queues hand a sent record to its first receive only', () => {
  it('first receive: the record object and the body; a redelivery: the stored body, no record', () => {
    const clock = new VirtualClock(1_000_000);
    const state = new SqliteState(join(makeTempDir(), 'state.db'), { clock });
    const q = stageQueue(state);
    const r = record('t1');
    const body = serialiseRecord(r);
    const id = state.transact(() => q.sendRecord(r));
    const [first] = state.transact(() => q.receive(10));
    expect(first?.record).toBe(r);
    expect(first?.body).toBe(body);
    clock.advanceBy(10_000);
    const [again] = state.transact(() => q.receive(10));
    expect(again).toMatchObject({ messageId: id, receiveCount: 2, body });
    expect(again?.record).toBeUndefined();
    expect(state.transact(() => q.delete(id, again!.receiptHandle!))).toBe(true);
    expect(q.depth).toBe(0);
    state.close();
  });

  it('after a restart the body is read back from the file (the record was memory only)', () => {
    const file = join(makeTempDir(), 'state.db');
    const clock = new VirtualClock(1_000_000);
    const state = new SqliteState(file, { clock });
    const r = record('t2');
    const body = serialiseRecord(r);
    state.transact(() => stageQueue(state).sendRecord(r));
    state.close();
    const reopened = new SqliteState(file, { clock });
    const [m] = reopened.transact(() => stageQueue(reopened).receive(10));
    expect(m?.body).toBe(body);
    expect(m?.record).toBeUndefined();
    expect(parseRecord(m!.body)).toStrictEqual(r);
    reopened.close();
  });

  it('a record sent in a unit of work that never commits is not there after a crash', () => {
    const file = join(makeTempDir(), 'state.db');
    const clock = new VirtualClock(1_000_000);
    const state = new SqliteState(file, { clock });
    const q = stageQueue(state);
    state.hold();
    const r = record('t3');
    q.sendRecord(r);
    // A second connection while the first still holds the unit: what a restart after kill -9 sees.
    const other = new SqliteState(file, { clock, readonly: true });
    expect(other.queue({ name: 'q', visibilityTimeoutSeconds: 10 }).depth).toBe(0);
    other.close();
    state.release();
    state.close();
  });

  it('a message moved to the DLQ carries its stored body, and the DLQ never hands a record over', () => {
    const clock = new VirtualClock(1_000_000);
    const state = new SqliteState(join(makeTempDir(), 'state.db'), { clock });
    const dead: string[] = [];
    const q = stageQueue(state, dead);
    const r = record('t4');
    const body = serialiseRecord(r);
    const id = state.transact(() => q.sendRecord(r));
    for (let i = 0; i < 2; i += 1) {
      state.transact(() => q.receive(1));
      clock.advanceBy(10_000);
    }
    expect(state.transact(() => q.receive(1))).toEqual([]);
    expect(dead).toEqual([body]);
    const dlq = state.queue({ name: 'q-dlq', visibilityTimeoutSeconds: 30 });
    const [letter] = state.transact(() => dlq.receive(1));
    expect(letter).toMatchObject({ messageId: id, body });
    expect(letter?.record).toBeUndefined();
    state.close();
  });
});

describe('bodies stored once', () => {
  /** An inbound message with a large body, received, and the record authenticate would forward. */
  function forwardedFromInbound(state: SqliteState) {
    const inbound = state.queue({ name: 'in', visibilityTimeoutSeconds: 10 });
    const next = stageQueue(state);
    const jwe = `eyJhbGciOiJSU0EtT0FFUC0yNTYifQ.${'x'.repeat(40_000)}.iv.ct.tag`;
    const traceId = state.transact(() => inbound.send(jwe));
    const [received] = state.transact(() => inbound.receive(1));
    const r: PipelineRecord = { ...record(traceId), sealed: { inline: received!.body } };
    return { inbound, next, received: received!, r, jwe };
  }

  const count = (state: SqliteState, table: string) =>
    (state.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;

  it('a forwarded record carrying the inbound JWE refers to it; its body reads back exactly, also after a restart', () => {
    const file = join(makeTempDir(), 'state.db');
    const clock = new VirtualClock(1_000_000);
    const state = new SqliteState(file, { clock });
    const { inbound, next, received, r, jwe } = forwardedFromInbound(state);
    state.transact(() => {
      next.sendRecord(r);
      inbound.delete(received.messageId, received.receiptHandle!);
    });
    // One copy of the JWE in the file, shared; the record's own row is a small template.
    expect(count(state, 'body_parts')).toBe(1);
    const template = state.db.prepare('SELECT template FROM message_splices').get() as { template: string };
    expect(template.template.length).toBeLessThan(500);
    expect(next.peekAll()[0]?.body).toBe(serialiseRecord(r));
    expect(state.backlog().bytes).toBe(Buffer.byteLength(serialiseRecord(r)));
    state.close();
    const reopened = new SqliteState(file, { clock });
    const q = stageQueue(reopened);
    const [m] = reopened.transact(() => q.receive(1));
    expect(m?.body).toBe(serialiseRecord(r));
    expect(parseRecord(m!.body).sealed).toEqual({ inline: jwe });
    reopened.transact(() => q.delete(m!.messageId, m!.receiptHandle!));
    expect(['body_parts', 'message_splices', 'message_bodies'].map((t) => count(reopened, t))).toEqual([
      0, 0, 0,
    ]);
    reopened.close();
  });

  it('a JWE JSON would escape is stored inside the record as before', () => {
    const state = new SqliteState(join(makeTempDir(), 'state.db'), { clock: new VirtualClock(1_000_000) });
    const inbound = state.queue({ name: 'in', visibilityTimeoutSeconds: 10 });
    const odd = `${'y'.repeat(20_000)}"\\\n`;
    const traceId = state.transact(() => inbound.send(odd));
    const [received] = state.transact(() => inbound.receive(1));
    const r: PipelineRecord = { ...record(traceId), sealed: { inline: received!.body } };
    const next = stageQueue(state);
    state.transact(() => next.sendRecord(r));
    expect(count(state, 'message_splices')).toBe(1); // the inbound message's own
    expect(parseRecord(next.peekAll()[0]!.body)).toStrictEqual(r);
    state.close();
  });

  it('a part the unit of work rolled back is not referred to: the record is stored whole', () => {
    const file = join(makeTempDir(), 'state.db');
    const state = new SqliteState(file, { clock: new VirtualClock(1_000_000) });
    const { next, r } = forwardedFromInbound(state);
    // The part goes (as if its message were deleted by a unit that then failed to keep it).
    state.transact(() => state.db.prepare('DELETE FROM body_parts').run());
    state.transact(() => next.sendRecord(r));
    expect(next.peekAll()[0]?.body).toBe(serialiseRecord(r));
    state.close();
  });

  it('a file of the previous layout opens and is marked; one from a newer version is refused clearly', () => {
    const file = join(makeTempDir(), 'state.db');
    const first = new SqliteState(file, { clock: new VirtualClock(1_000_000) });
    first.transact(() => stageQueue(first).send('{"traceId":"old"}'));
    first.db.exec('DROP TABLE body_parts; DROP TABLE message_splices; PRAGMA user_version = 0');
    first.close();
    // Operator commands open it read-only as it is, then a run opens it and marks it.
    const reader = new SqliteState(file, { clock: new VirtualClock(1_000_000), readonly: true });
    expect(
      reader
        .queue({ name: 'q', visibilityTimeoutSeconds: 10 })
        .peekAll()
        .map((m) => m.body),
    ).toEqual(['{"traceId":"old"}']);
    reader.close();
    const old = new SqliteState(file, { clock: new VirtualClock(1_000_000) });
    expect(old.db.pragma('user_version', { simple: true })).toBe(1);
    expect(
      stageQueue(old)
        .peekAll()
        .map((m) => m.body),
    ).toEqual(['{"traceId":"old"}']);
    old.db.pragma('user_version = 2');
    old.close();
    expect(() => new SqliteState(file, { clock: new VirtualClock(1_000_000) })).toThrow(
      /written by a newer version of itk3 \(format 2; this version reads up to 1\)/,
    );
  });
});

describe('memory queues hand a sent record to its first receive only', () => {
  it('as the SQLite queues do', () => {
    const clock = new VirtualClock(1_000_000);
    const q = new MemoryQueue({ name: 'q', visibilityTimeoutSeconds: 10 }, clock);
    const r = record('t5');
    const body = serialiseRecord(r);
    const id = q.sendRecord(r);
    const [first] = q.receive(1);
    expect(first).toMatchObject({ messageId: id, body, record: r });
    clock.advanceBy(10_000);
    const [again] = q.receive(1);
    expect(again).toMatchObject({ messageId: id, body, receiveCount: 2 });
    expect(again?.record).toBeUndefined();
  });
});

describe('the decode path', () => {
  it('takes a handed-over record once; the same carrier decoded again has none', () => {
    const carrier = {};
    const r = record('t6');
    handOverRecord(carrier, r);
    expect(takeHandedOverRecord(carrier)).toBe(r);
    expect(takeHandedOverRecord(carrier)).toBeUndefined();
  });
});

function deepFreeze(value: unknown): void {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const inner of Object.values(value)) deepFreeze(inner);
}

/**
 * Watch every stage queue: each record handed over must be exactly what its body parses to, and
 * that body exactly what the queue holds (for the SQLite state: read back from the file, where a
 * forwarded record may be stored as a template around its trace's stored JWE).
 */
function checkEveryHandOff(pipeline: EmbeddedPipeline): { handedOver: number; received: number } {
  const counts = { handedOver: 0, received: 0 };
  for (const stage of STAGES) {
    const q = pipeline.queues[stage];
    const receive = q.receive.bind(q);
    q.receive = (max) => {
      const batch = receive(max);
      const stored = new Map(q.peekAll().map((m) => [m.messageId, m.body]));
      for (const m of batch) {
        counts.received += 1;
        expect(stored.get(m.messageId)).toBe(m.body);
        if (!m.record) continue;
        counts.handedOver += 1;
        expect(m.record).toStrictEqual(parseRecord(m.body));
        // The object is shared with the stage that forwarded it: no stage may change it.
        deepFreeze(m.record);
      }
      return batch;
    };
  }
  return counts;
}

describe('the demo scenario with the hand-off', () => {
  it.each([
    ['SQLite', true],
    ['memory', false],
  ])(
    '%s state: every forwarded record equals its parsed body, and every message ends as expected',
    async (_, sqlite) => {
      const baseDir = makeTempDir('itk3-hand-off-');
      const clock = new VirtualClock();
      const state = sqlite ? new SqliteState(join(baseDir, 'state.db'), { clock }) : undefined;
      const pipeline = embeddedPipeline(world, { baseDir, clock, ...(state ? { state } : {}) });
      const counts = checkEveryHandOff(pipeline);
      let shared = 0;
      if (state) {
        const refPart = state.refPart.bind(state);
        state.refPart = (key) => {
          shared += 1;
          return refPart(key);
        };
      }
      const scenario = await buildScenario(world, clock.now());
      const traces: string[] = [];
      for (const phase of [...new Set(scenario.map((m) => m.phase ?? 1))].sort((a, b) => a - b)) {
        for (const [i, message] of scenario.entries()) {
          if ((message.phase ?? 1) === phase) traces[i] = await submitScenarioMessage(pipeline, message);
        }
        await pipeline.drain();
      }
      const outcomes = await Promise.all(traces.map((t) => pipeline.outcome(t)));
      const actual = scenario.map((m, i) => ({
        name: m.name,
        status: outcomes[i]!.status,
        ...(m.expected.stage !== undefined ? { stage: outcomes[i]!.stage } : {}),
        ...(m.expected.itk3Code !== undefined ? { itk3Code: outcomes[i]!.itk3Code } : {}),
        ...(m.expected.code !== undefined ? { code: outcomes[i]!.code } : {}),
      }));
      expect(actual).toEqual(scenario.map((m) => ({ name: m.name, ...m.expected })));
      // Forwards and rejections alike went by hand-off: every receive after authenticate's.
      expect(counts.handedOver).toBeGreaterThan(scenario.length);
      expect(counts.handedOver).toBe(counts.received - scenario.length);
      if (state) {
        // The JWE of every large submission was stored once and referred to by the next two hops,
        // and nothing of it is left once the traces have ended.
        expect(shared).toBeGreaterThan(0);
        const left = (table: string) =>
          (state.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
        expect(['body_parts', 'message_splices', 'message_bodies', 'messages'].map(left)).toEqual([
          0, 0, 0, 0,
        ]);
        state.close();
      }
    },
  );
});

describe('a handed-over record cannot be changed after it was sent', () => {
  it.each([
    ['SQLite', true],
    ['memory', false],
  ])('%s queue: the sender and the receiver both hold the stored view', (_, sqlite) => {
    const clock = new VirtualClock(1_000_000);
    const state = sqlite ? new SqliteState(join(makeTempDir(), 'state.db'), { clock }) : undefined;
    const q: StageQueue = state
      ? stageQueue(state)
      : new MemoryQueue({ name: 'q', visibilityTimeoutSeconds: 10 }, clock);
    const r: PipelineRecord = {
      ...record('t-frozen'),
      decision: { ruleId: 'rule-1', recipient: 'RCPT1', kid: 'kid-1' },
    };
    const body = serialiseRecord(r);
    const run = <T>(fn: () => T): T => (state ? state.transact(fn) : fn());
    run(() => q.sendRecord(r));
    // The stage that sent it changes its own object afterwards: refused, not silently diverging.
    expect(() => {
      r.decision!.kid = 'kid-other';
    }).toThrow(TypeError);
    const [first] = run(() => q.receive(10));
    expect(first?.record).toBeDefined();
    // The next stage changing what it was handed: refused too.
    expect(() => {
      (first!.record as { receivedAt: number }).receivedAt = 0;
    }).toThrow(TypeError);
    expect(serialiseRecord(first!.record!)).toBe(body);
    expect(first?.body).toBe(body);
    state?.close();
  });
});
