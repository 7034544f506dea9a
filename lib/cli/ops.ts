/**
 * Operator commands for embedded runs: `itk3 dlq list|show|redrive` and `itk3 trace`.
 * They read what `itk3 process` / `itk3 serve` left in their `--out` folder: the audit trail
 * (audit.jsonl), the once-store (once.jsonl) and the dead letters (dlq/<stage>/).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MemoryAuditLog } from '../adapters/local/memory-stores.js';
import type { LoadedConfig } from '../config/load.js';
import { UsageError } from '../errors.js';
import { findDeadLetter, listDeadLetters, removeDeadLetter, saveDeadLetters } from '../ops/dead-letters.js';
import { type KeyService, STAGES, type StageName } from '../ports/index.js';
import { EmbeddedPipeline, outcomeFromAudit } from '../runtime/embedded.js';
import { renderTable } from './table.js';

type Write = (line: string) => void;

/** Files an embedded run keeps in its output folder. */
export function runFiles(out: string) {
  const dir = resolve(out);
  return { dir, audit: join(dir, 'audit.jsonl'), once: join(dir, 'once.jsonl') };
}

export function dlqList(out: string, stage: StageName | undefined, json: boolean, write: Write): number {
  const letters = listDeadLetters(runFiles(out).dir, stage);
  if (json) {
    for (const l of letters) write(JSON.stringify(l));
    return 0;
  }
  if (letters.length === 0) {
    write(`no dead letters in ${runFiles(out).dir}`);
    return 0;
  }
  write(
    renderTable(
      ['stage', 'message id', 'trace id', 'reason', 'dead-lettered at'],
      letters.map((l) => [l.stage, l.messageId, l.traceId, l.reason, l.deadLetteredAt]),
      64,
    ),
  );
  return 0;
}

export async function dlqShow(out: string, messageId: string, write: Write): Promise<number> {
  const files = runFiles(out);
  const letter = findDeadLetter(files.dir, messageId);
  if (!letter) throw new UsageError(`no dead letter ${messageId} in ${files.dir}`);
  // Never the body: it holds the credential and message content.
  const { body, attributes: _a, sentAt: _s, ...summary } = letter;
  write(JSON.stringify({ ...summary, bodyBytes: Buffer.byteLength(body, 'utf8') }, null, 2));
  return trace(out, letter.traceId, write);
}

export async function dlqRedrive(
  out: string,
  target: string,
  config: LoadedConfig,
  keys: KeyService,
  write: Write,
): Promise<number> {
  const files = runFiles(out);
  const stage = (STAGES as readonly string[]).includes(target) ? (target as StageName) : undefined;
  const letters =
    target === 'all' || stage
      ? listDeadLetters(files.dir, stage).map((s) => findDeadLetter(files.dir, s.messageId)!)
      : [findDeadLetter(files.dir, target)].filter((l) => l !== undefined);
  if (letters.length === 0) throw new UsageError(`nothing to redrive for "${target}" in ${files.dir}`);

  const pipeline = new EmbeddedPipeline({
    config,
    keys,
    baseDir: files.dir,
    auditFile: files.audit,
    onceFile: files.once,
  });
  for (const letter of letters) {
    pipeline.queues[letter.stage].send(letter.body, letter.attributes, letter.messageId, letter.sentAt);
    removeDeadLetter(files.dir, letter);
    await pipeline.audit.append({
      traceId: letter.traceId,
      at: new Date().toISOString(),
      stage: 'operator',
      event: 'redriven',
      detail: `back to ${letter.stage}`,
    });
  }
  await pipeline.drain();
  saveDeadLetters(files.dir, pipeline);
  for (const letter of letters) {
    const o = await pipeline.outcome(letter.traceId);
    write(
      JSON.stringify({
        messageId: letter.messageId,
        traceId: letter.traceId,
        status: o.status,
        stage: o.stage ?? null,
        itk3Code: o.itk3Code ?? null,
        error: o.code ?? null,
      }),
    );
  }
  return 0;
}

export async function trace(out: string, traceId: string, write: Write): Promise<number> {
  const files = runFiles(out);
  if (!existsSync(files.audit)) throw new UsageError(`no audit trail at ${files.audit}`);
  const entries = await new MemoryAuditLog({ file: files.audit }).byTrace(traceId);
  if (entries.length === 0) throw new UsageError(`no trace ${traceId} in ${files.audit}`);
  write(
    renderTable(
      ['at', 'stage', 'event', 'code', 'ITK3', 'message id', 'sender', 'recipient', 'rule', 'detail'],
      entries.map((e) => [
        e.at,
        e.stage,
        e.event,
        e.code ?? '',
        e.itk3Code ?? '',
        e.messageId ?? '',
        e.sender ?? '',
        e.recipient ?? '',
        e.ruleId ?? '',
        e.detail ?? '',
      ]),
      64,
    ),
  );
  const o = outcomeFromAudit(traceId, entries);
  write(
    `outcome: ${o.status}${o.stage ? ` at ${o.stage}` : ''}${o.itk3Code ? `, ITK3 ${o.itk3Code}` : ''}${o.code ? `, ${o.code}` : ''}`,
  );
  return 0;
}
