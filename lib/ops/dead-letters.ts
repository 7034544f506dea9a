/**
 * Dead letters of embedded runs, read from the run's state file (`<out>/state.db`, the SQLite
 * state), so an operator can list, inspect and redrive them after the run (`itk3 dlq …`) or while
 * `itk3 serve` runs on it.
 *
 * Listing and showing never print bodies: only ids, stage, reason, attempts and the audit trail.
 */
import type { SqliteState } from '../adapters/local/sqlite-state.js';
import { STAGE_DEFINITIONS } from '../infra/definitions.js';
import { STAGES, type StageName } from '../pipeline/topology.js';

export interface DeadLetter {
  stage: StageName;
  messageId: string;
  traceId: string;
  reason: string;
  deadLetteredAt: string;
  /** When the queue first received it (ms): a redrive keeps it, so credentials are judged at receipt. */
  sentAt?: number;
  body: string;
  attributes: Record<string, string>;
}

export type DeadLetterSummary = Omit<DeadLetter, 'body' | 'attributes' | 'sentAt'>;

/** Every dead letter in the state, oldest first, without bodies. */
export function listDeadLetters(state: SqliteState, stage?: StageName): DeadLetterSummary[] {
  return allDeadLetters(state)
    .filter((l) => !stage || l.stage === stage)
    .map(({ body: _b, attributes: _a, sentAt: _s, ...summary }) => summary);
}

/** One dead letter by message id (any stage), with its body, for redrive. */
export function findDeadLetter(state: SqliteState, messageId: string): DeadLetter | undefined {
  return allDeadLetters(state).find((l) => l.messageId === messageId);
}

function allDeadLetters(state: SqliteState): DeadLetter[] {
  const out: DeadLetter[] = [];
  for (const m of state.deadLetters()) {
    const stage = STAGES.find((s) => STAGE_DEFINITIONS[s].dlq === m.queue);
    if (!stage) continue;
    out.push({
      stage,
      messageId: m.messageId,
      traceId: traceIdOf(m.body, m.messageId),
      reason: m.deadLetter?.reason ?? 'unknown',
      deadLetteredAt: new Date(m.deadLetter?.at ?? 0).toISOString(),
      sentAt: m.sentAt,
      body: m.body,
      attributes: m.attributes,
    });
  }
  return out;
}

function traceIdOf(body: string, fallback: string): string {
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
