/**
 * Dead letters of embedded runs, kept on disk so an operator can list, inspect and redrive them
 * after the run (`itk3 dlq …`). One file per message under `<out>/dlq/<stage>/`, mode 0600: the
 * bodies hold credentials and message content, exactly as an SQS DLQ at rest would.
 *
 * Listing and showing never print bodies: only ids, stage, reason, attempts and the audit trail.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { STAGES, type StageName } from '../ports/index.js';
import type { EmbeddedPipeline } from '../runtime/embedded.js';

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

const SAFE_ID = /^[A-Za-z0-9-]{1,128}$/;

/** Write every message now in the pipeline's DLQs to `<dir>/dlq/<stage>/<messageId>.json`. */
export function saveDeadLetters(dir: string, pipeline: EmbeddedPipeline): number {
  let n = 0;
  for (const { stage, message } of pipeline.deadLetters()) {
    if (!SAFE_ID.test(message.messageId)) continue;
    const folder = join(dir, 'dlq', stage);
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    const letter: DeadLetter = {
      stage,
      messageId: message.messageId,
      traceId: traceIdOf(message.body, message.messageId),
      reason: message.deadLetter?.reason ?? 'unknown',
      deadLetteredAt: new Date(message.deadLetter?.at ?? Date.now()).toISOString(),
      sentAt: message.sentAt,
      body: message.body,
      attributes: message.attributes,
    };
    const file = join(folder, `${message.messageId}.json`);
    writeFileSync(file, JSON.stringify(letter), { mode: 0o600 });
    chmodSync(file, 0o600);
    n += 1;
  }
  return n;
}

/** Every saved dead letter, oldest first, without bodies. */
export function listDeadLetters(dir: string, stage?: StageName): DeadLetterSummary[] {
  const out: DeadLetterSummary[] = [];
  for (const s of stage ? [stage] : STAGES) {
    const folder = join(dir, 'dlq', s);
    if (!existsSync(folder)) continue;
    for (const f of readdirSync(folder).filter((x) => x.endsWith('.json'))) {
      const { body: _b, attributes: _a, sentAt: _s, ...summary } = readLetter(join(folder, f));
      out.push(summary);
    }
  }
  return out.sort((a, b) => a.deadLetteredAt.localeCompare(b.deadLetteredAt));
}

/** One dead letter by message id (any stage), with its body, for redrive. */
export function findDeadLetter(dir: string, messageId: string): DeadLetter | undefined {
  if (!SAFE_ID.test(messageId)) return undefined;
  for (const s of STAGES) {
    const file = join(dir, 'dlq', s, `${messageId}.json`);
    if (existsSync(file)) return readLetter(file);
  }
  return undefined;
}

export function removeDeadLetter(dir: string, letter: Pick<DeadLetter, 'stage' | 'messageId'>): void {
  rmSync(join(dir, 'dlq', letter.stage, `${letter.messageId}.json`), { force: true });
}

function readLetter(file: string): DeadLetter {
  return JSON.parse(readFileSync(file, 'utf8')) as DeadLetter;
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
