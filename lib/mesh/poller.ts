/**
 * The inbound MESH poller: one bounded pass over a mailbox.
 *
 * For each message in the inbox: download it (size-capped), put it on the pipeline's inbound queue
 * with its MESH facts as message attributes (a claim check for large bodies), and acknowledge it
 * only after the queue accepted it. A message that was enqueued by an earlier pass that died before
 * acknowledging is recognised through the once-store and only acknowledged (lib/mesh/once.ts).
 * MESH `REPORT` messages (non-delivery and errors) are recorded in the audit trail and acknowledged,
 * never enqueued.
 *
 * The same function serves `itk3 mesh poll`, a continuous embedded poller and (later) the scheduled
 * AWS poller: it takes the MESH port and the pipeline ports, nothing else.
 */
import { createHash, randomUUID } from 'node:crypto';
import * as z from 'zod';
import { sha256Hex } from '../hashing.js';
import type { AuditEntry, AuditLog, BlobStore, Clock, OnceStore, QueueSender } from '../ports/index.js';
import type { MeshFacts } from '../record.js';
import { artefactKey } from '../stages/claim-check.js';
import { MESH_ATTESTATION_ATTRIBUTE, meshFactsFrom } from './attestation.js';
import type { MeshClient, MeshDownloadedMessage } from './client.js';
import { MeshConfigError, MeshError } from './errors.js';
import { MESH_DEDUPE_SECONDS, onceAcrossCrashes } from './once.js';

export interface MeshPollerPorts {
  queues: Pick<QueueSender, 'sendInbound'>;
  once: OnceStore;
  blobs: BlobStore;
  audit: AuditLog;
  clock: Clock;
  /**
   * Sign the MESH facts of a message before it is enqueued (lib/mesh/attestation.ts); the
   * authenticate stage accepts a MESH message only with this attestation. Without it the poller
   * still moves messages, but the pipeline treats them as unauthenticated.
   */
  attest?: (facts: MeshFacts) => Promise<string>;
  /**
   * Whether the sending mailbox (`Mex-From`) is registered (lib/policy/mesh.ts
   * `meshMailboxKnown`). A message from any other mailbox costs nothing: no attestation signature,
   * no claim check, no enqueue; it is audited once and acknowledged. Without it every sender passes
   * here and authenticate refuses the unknown ones.
   */
  knownSender?: (mailbox: string | undefined) => boolean;
}

export const MeshPollOptionsSchema = z
  .object({
    /** Stop after this many messages (enqueued, reports, re-acknowledged) in one pass. */
    maxMessages: z.number().int().positive().max(10_000).default(100),
    /** Largest single message accepted (bytes, after decompression). Larger ones stay in MESH. */
    maxMessageBytes: z
      .number()
      .int()
      .positive()
      .default(100 * 1024 * 1024),
    /** Stop downloading once a pass has taken this many bytes; at least `maxMessageBytes`. */
    maxBytesPerPass: z
      .number()
      .int()
      .positive()
      .default(200 * 1024 * 1024),
    /** Above this the body goes to the blob store, the queue gets a claim check: pass `limits.claimCheckBytes`. */
    claimCheckBytes: z.number().int().positive().default(196_608),
    /** Inbox page size (MESH returns at most 500 ids a call). */
    pageSize: z.number().int().min(10).max(500).default(500),
  })
  .strict()
  .refine((o) => o.maxBytesPerPass >= o.maxMessageBytes, {
    message: 'maxBytesPerPass must be at least maxMessageBytes (else a large message could never be taken)',
  });

export type MeshPollOptions = z.input<typeof MeshPollOptionsSchema>;

export interface MeshPollSummary {
  mailbox: string;
  /** Messages put on the inbound queue in this pass, with the trace id the queue gave them. */
  enqueued: { meshMessageId: string; traceId: string }[];
  /** Enqueued by an earlier pass that did not get to acknowledge them; acknowledged now. */
  reacknowledged: { meshMessageId: string; traceId: string }[];
  /** REPORT messages audited and acknowledged. */
  reports: { meshMessageId: string; traceId: string; statusCode: string | undefined }[];
  /** Left in the inbox on purpose (too large, unreadable): MESH tells the sender after 5 days. */
  refused: { meshMessageId: string; reason: string }[];
  bytes: number;
  /** Why the pass ended before the inbox was empty (limits reached, or MESH or the queue failing). */
  stopped?: { reason: 'max-messages' | 'max-bytes' | 'transient-failure'; detail?: string };
}

/** Trace ids the pipeline itself uses (queue message ids): a REPORT whose local id has this form is ours. */
const TRACE_ID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** Inbox list calls in one pass at most (a misbehaving server cannot keep a pass going). */
const MAX_LISTINGS_PER_PASS = 1_000;

/**
 * One pass. Throws only for problems an operator must fix (MESH refused the credentials, bad
 * options, the clock): transient failures end the pass with `stopped` and the next pass resumes.
 */
export async function pollMailbox(
  client: MeshClient,
  ports: MeshPollerPorts,
  options: MeshPollOptions = {},
): Promise<MeshPollSummary> {
  const parsed = MeshPollOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new MeshConfigError(
      `invalid MESH poll options: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(options)'}: ${i.message}`).join('; ')}`,
    );
  }
  const opts = parsed.data;
  const mailbox = client.mailbox;
  const passId = randomUUID();
  const summary: MeshPollSummary = {
    mailbox,
    enqueued: [],
    reacknowledged: [],
    reports: [],
    refused: [],
    bytes: 0,
  };
  const handled = () => summary.enqueued.length + summary.reacknowledged.length + summary.reports.length;

  try {
    // Acknowledging while paging can shift MESH's pages, so a finished listing is repeated from the
    // start until it offers nothing new; `seen` keeps one pass from taking a message twice.
    const seen = new Set<string>();
    let continueFrom: string | undefined;
    for (let listing = 0; listing < MAX_LISTINGS_PER_PASS; listing += 1) {
      const page = await client.listInbox({
        maxResults: opts.pageSize,
        ...(continueFrom ? { continueFrom } : {}),
      });
      const fresh = page.messageIds.filter((id) => !seen.has(id));
      for (const meshMessageId of fresh) {
        seen.add(meshMessageId);
        if (handled() >= opts.maxMessages) {
          summary.stopped = { reason: 'max-messages' };
          return summary;
        }
        const budget = opts.maxBytesPerPass - summary.bytes;
        if (budget <= 0 || !(await handleOne(client, ports, opts, passId, meshMessageId, budget, summary))) {
          summary.stopped = { reason: 'max-bytes' };
          return summary;
        }
      }
      if (page.next) continueFrom = page.next;
      else if (fresh.length > 0) continueFrom = undefined;
      else break;
    }
  } catch (error) {
    if (error instanceof MeshError && error.kind === 'transient') {
      summary.stopped = { reason: 'transient-failure', detail: error.message };
      return summary;
    }
    throw error;
  }
  return summary;
}

async function handleOne(
  client: MeshClient,
  ports: MeshPollerPorts,
  opts: z.output<typeof MeshPollOptionsSchema>,
  passId: string,
  meshMessageId: string,
  budget: number,
  summary: MeshPollSummary,
): Promise<boolean> {
  const mailbox = client.mailbox;
  const limit = Math.min(opts.maxMessageBytes, budget);
  let message: MeshDownloadedMessage;
  try {
    message = await client.download(meshMessageId, { maxBytes: limit });
  } catch (error) {
    if (error instanceof MeshError && error.kind === 'too-large' && limit < opts.maxMessageBytes) {
      return false; // over what is left of this pass's budget, not over the per-message cap: next pass
    }
    if (error instanceof MeshError && (error.status === 404 || error.status === 410)) {
      summary.refused.push({
        meshMessageId,
        reason: 'gone from the inbox (acknowledged or expired meanwhile)',
      });
      return true;
    }
    if (error instanceof MeshError && (error.kind === 'too-large' || error.kind === 'permanent')) {
      summary.refused.push({ meshMessageId, reason: error.message });
      await auditRefusal(
        ports,
        mailbox,
        meshMessageId,
        error.kind === 'too-large' ? 'MESH_MESSAGE_TOO_LARGE' : 'MESH_MESSAGE_UNREADABLE',
        error.message,
      );
      return true;
    }
    throw error;
  }
  summary.bytes += message.body.byteLength;
  const base = `mesh#${mailbox}#${meshMessageId}`;

  if (message.messageType === 'REPORT') {
    const traceId = reportTraceId(message);
    await viaPorts(() =>
      onceAcrossCrashes(ports.once, `${base}#report`, passId, async () => {
        await ports.audit.append(reportEntry(ports, mailbox, message, traceId));
        return traceId;
      }),
    );
    await client.acknowledge(meshMessageId);
    summary.reports.push({ meshMessageId, traceId, statusCode: message.report?.statusCode });
    return true;
  }

  if (ports.knownSender && !ports.knownSender(message.from)) {
    // Nothing for free to an unauthenticated sender: audited once, acknowledged, never enqueued.
    summary.refused.push({ meshMessageId, reason: 'sending mailbox is not registered' });
    await auditRefusal(
      ports,
      mailbox,
      meshMessageId,
      'MESH_MAILBOX_UNKNOWN',
      'sending mailbox not registered',
    );
    await client.acknowledge(meshMessageId);
    return true;
  }

  const outcome = await viaPorts(() =>
    onceAcrossCrashes(ports.once, base, passId, async () => {
      const { body, encoding } = await queueBody(ports.blobs, base, message, opts.claimCheckBytes);
      const attributes = attributesOf(message, encoding);
      const facts = ports.attest ? meshFactsFrom(attributes, body) : undefined;
      if (ports.attest && facts) attributes[MESH_ATTESTATION_ATTRIBUTE] = await ports.attest(facts);
      const traceId = await ports.queues.sendInbound(body, attributes);
      // Links the MESH message to the trace: `itk3 trace <traceId>` shows where it came from. The
      // message is on the queue already: an audit hiccup must not make the next pass enqueue it again.
      await ports.audit
        .append({
          traceId,
          at: new Date(ports.clock.now()).toISOString(),
          stage: 'mesh',
          event: 'received',
          detail: `MESH message ${meshMessageId} from ${message.from ?? '?'} to ${message.to ?? mailbox}, workflow ${message.workflowId ?? '?'}`,
        })
        .catch(() => undefined);
      return traceId;
    }),
  );
  if (outcome.status === 'gave-up') {
    summary.refused.push({
      meshMessageId,
      reason: `enqueue interrupted ${outcome.attempts} times; left in MESH`,
    });
    return true;
  }
  // Acknowledge only now: the queue has the message (or had it from an earlier pass).
  await client.acknowledge(meshMessageId);
  if (outcome.status === 'done') summary.enqueued.push({ meshMessageId, traceId: outcome.result });
  else summary.reacknowledged.push({ meshMessageId, traceId: outcome.result });
  return true;
}

/**
 * The pipeline's own ports (queue, once-store, blob store, audit) failing is a transient failure of
 * the pass: the message stays in MESH unacknowledged and the next pass retries it.
 */
async function viaPorts<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof MeshError) throw error;
    throw new MeshError('transient', `the pipeline's queue or stores failed (${(error as Error).name})`, {
      cause: error,
    });
  }
}

/**
 * The queue body: the message text itself when it is UTF-8 (ITK3 XML or JSON), base64 otherwise
 * (told by the `Mex-Body-Encoding` attribute); above the claim-check size, a reference to the bytes
 * in the blob store, in the inbound queue's one claim-check format.
 */
async function queueBody(
  blobs: BlobStore,
  base: string,
  message: MeshDownloadedMessage,
  claimCheckBytes: number,
): Promise<{ body: string; encoding: 'utf-8' | 'base64' }> {
  if (message.body.byteLength > claimCheckBytes) {
    const key = artefactKey(
      `mesh-${createHash('sha256').update(base).digest('hex').slice(0, 32)}`,
      'mesh-body',
    );
    await blobs.put(key, message.body);
    const ref = { key, bytes: message.body.byteLength, sha256: sha256Hex(message.body) };
    return { body: JSON.stringify({ claimCheck: ref }), encoding: isUtf8(message.body) ? 'utf-8' : 'base64' };
  }
  try {
    return { body: utf8.decode(message.body), encoding: 'utf-8' };
  } catch {
    return { body: Buffer.from(message.body).toString('base64'), encoding: 'base64' };
  }
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    utf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** MESH facts as queue message attributes. SQS refuses empty values, so absent ones are left out. */
function attributesOf(message: MeshDownloadedMessage, encoding: 'utf-8' | 'base64'): Record<string, string> {
  const attributes: Record<string, string> = { Transport: 'mesh', 'Mex-Body-Encoding': encoding };
  const put = (name: string, value: string | undefined) => {
    const clean = value?.replace(/[^\x20-\x7E]/g, '').slice(0, 256);
    if (clean) attributes[name] = clean;
  };
  put('Mex-From', message.from);
  put('Mex-To', message.to);
  put('Mex-WorkflowID', message.workflowId);
  put('Mex-MessageID', message.messageId);
  put('Mex-LocalID', message.localId);
  put('Mex-Subject', message.subject);
  put('Mex-FileName', message.fileName);
  put('Content-Type', message.contentType);
  return attributes;
}

/**
 * The trace a REPORT belongs to: when the report's local id is one of our trace ids (the outbound
 * MESH target sends with `Mex-LocalID` = trace id), the report joins that trace and `itk3 trace`
 * shows it; otherwise it gets its own trace, named after the report.
 */
function reportTraceId(message: MeshDownloadedMessage): string {
  return message.localId && TRACE_ID.test(message.localId)
    ? message.localId
    : `mesh-report-${message.messageId}`;
}

function reportEntry(
  ports: MeshPollerPorts,
  mailbox: string,
  message: MeshDownloadedMessage,
  traceId: string,
): AuditEntry {
  const r = message.report;
  const clean = (s: string | undefined) => (s ?? '').replace(/[^\x20-\x7E]/g, '').slice(0, 120);
  return {
    traceId,
    at: new Date(ports.clock.now()).toISOString(),
    stage: 'mesh',
    event: 'mesh-report',
    code: `MESH_${clean(r?.statusCode) || 'REPORT'}`,
    detail: [
      `report ${message.messageId} in ${mailbox}`,
      `on MESH message ${clean(r?.linkedMessageId) || '?'}`,
      `local id ${clean(message.localId) || '?'}`,
      `workflow ${clean(message.workflowId) || '?'}`,
      `${clean(r?.statusEvent)} ${clean(r?.statusCode)} ${clean(r?.statusDescription)}`.trim(),
    ].join(', '),
  };
}

async function auditRefusal(
  ports: MeshPollerPorts,
  mailbox: string,
  meshMessageId: string,
  code: string,
  detail: string,
): Promise<void> {
  // Once per message, however many passes see it.
  const first = await ports.once
    .putIfAbsent(`mesh#${mailbox}#${meshMessageId}#refused`, code, MESH_DEDUPE_SECONDS)
    .catch(() => ({ created: false }));
  if (!first.created) return;
  await ports.audit
    .append({
      traceId: `mesh-${mailbox}-${meshMessageId}`,
      at: new Date(ports.clock.now()).toISOString(),
      stage: 'mesh',
      event: 'mesh-refused',
      code,
      detail,
    })
    .catch(() => undefined);
}
