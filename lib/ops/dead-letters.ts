/**
 * The dead-letter port: what an operator does with the messages a stage gave up on — list them,
 * look at one, send them back to their stage's queue — whatever holds them. `itk3 dlq`, `itk3 trace`
 * and the operator console use only this port; the adapters are
 *
 * - {@link LocalDeadLetters}: an embedded run's DLQs (the SQLite state), redriven through the
 *   runtime's own `EmbeddedPipeline.redrive` (original receipt time kept, stored outcome
 *   forgotten, `redriven` audited), and {@link LocalDeadLetterReader} for reading a run's state file
 *   without a pipeline;
 * - `SqsDeadLetters` (lib/adapters/aws/dead-letters.ts): the SQS DLQs of a deployed stack, or of one
 *   on an emulator (the same adapter, another endpoint).
 *
 * Nothing here returns a body: it holds the credential and the message content.
 */
import type { SqliteState } from '../adapters/local/sqlite-state.js';
import { STAGE_DEFINITIONS } from '../infra/definitions.js';
import { STAGES, type StageName } from '../pipeline/topology.js';
import type { QueuedMessage } from '../runtime/memory-queue.js';

/** One dead letter, as an operator sees it. */
export interface DeadLetter {
  stage: StageName;
  /** The queue's id of the message (what `show` and `redrive` take). */
  messageId: string;
  traceId: string;
  /** The last failure reason known for it at its stage; `unknown` when none was recorded. */
  reason: string;
  /**
   * How many times it was received, where the queue keeps that count: SQS's approximate count
   * (which its DLQ carries on, and listing adds to). The embedded DLQs start it again at 0.
   */
  receiveCount?: number;
  /** When its queue first accepted it (ISO time). */
  sentAt: string;
  /** When it was moved to the DLQ, where the queue records that (the embedded one; SQS does not). */
  deadLetteredAt?: string;
  /** The size of its body; never the body. */
  bodyBytes: number;
}

/** Reading dead letters: all an operator needs to look, with no way to move anything. */
export interface DeadLetterReader {
  /** Where the dead letters are, for messages: a run folder, or a stack's DLQs. */
  readonly where: string;
  /** Every dead letter (or one stage's), oldest first. */
  list(stage?: StageName): Promise<DeadLetter[]>;
  /** One dead letter by its message id, at any stage. */
  show(messageId: string): Promise<DeadLetter | undefined>;
}

export interface DeadLetters extends DeadLetterReader {
  /**
   * Move `stage`'s dead letters (or only `messageId`) back to the stage's queue. Each one moved gets
   * an audit entry `{stage: 'operator', event: 'redriven', detail: 'back to <stage>[ by <by>]'}`.
   * Returns the letters moved (none when nothing matched).
   */
  redrive(stage: StageName, messageId?: string, by?: string): Promise<DeadLetter[]>;
}

/** Where a message's trace id is: an internal record carries it; a raw inbound message's is its id. */
export function traceIdOfBody(body: string, messageId: string): string {
  if (body.startsWith('{')) {
    try {
      const t = (JSON.parse(body) as { traceId?: unknown }).traceId;
      if (typeof t === 'string') return t;
    } catch {
      // not a record: the transport id
    }
  }
  return messageId;
}

/** Something that holds an embedded run's DLQs: the running pipeline, or its state file. */
export interface LocalDeadLetterSource {
  deadLetters(): readonly { stage: StageName; message: QueuedMessage }[];
}

/** The DLQ messages of a run's state file, read without a pipeline (so without a configuration). */
export function stateDeadLetterSource(state: SqliteState): LocalDeadLetterSource {
  return {
    deadLetters: () =>
      state.deadLetters().flatMap((message) => {
        const stage = STAGES.find((s) => STAGE_DEFINITIONS[s].dlq === message.queue);
        return stage ? [{ stage, message }] : [];
      }),
  };
}

/** Dead letters of an embedded run, for reading. */
export class LocalDeadLetterReader implements DeadLetterReader {
  readonly where: string;
  readonly #source: LocalDeadLetterSource;

  constructor(source: LocalDeadLetterSource, where: string) {
    this.#source = source;
    this.where = where;
  }

  async list(stage?: StageName): Promise<DeadLetter[]> {
    return this.#source
      .deadLetters()
      .filter((l) => !stage || l.stage === stage)
      .map(({ stage: s, message }) => localDeadLetter(s, message))
      .sort((a, b) => (a.deadLetteredAt ?? '').localeCompare(b.deadLetteredAt ?? ''));
  }

  async show(messageId: string): Promise<DeadLetter | undefined> {
    return (await this.list()).find((l) => l.messageId === messageId);
  }
}

/** What the local adapter needs of the embedded runtime: its DLQs and its own redrive. */
export type EmbeddedRedrive = LocalDeadLetterSource & {
  redrive(stage: StageName, messageId?: string, by?: string): Promise<number>;
};

/**
 * Dead letters of a running embedded pipeline, redriven through the runtime's own redrive: the
 * original send time is kept (authenticate judges credentials at receipt, and a redrive is not a
 * new receipt), the stored outcome is forgotten, and the operator's `redriven` entry is audited.
 */
export class LocalDeadLetters extends LocalDeadLetterReader implements DeadLetters {
  readonly #pipeline: EmbeddedRedrive;

  constructor(pipeline: EmbeddedRedrive, where: string) {
    super(pipeline, where);
    this.#pipeline = pipeline;
  }

  async redrive(stage: StageName, messageId?: string, by?: string): Promise<DeadLetter[]> {
    const moved: DeadLetter[] = [];
    for (const letter of await this.list(stage)) {
      if (messageId !== undefined && letter.messageId !== messageId) continue;
      if ((await this.#pipeline.redrive(stage, letter.messageId, by)) > 0) moved.push(letter);
    }
    return moved;
  }
}

function localDeadLetter(stage: StageName, m: QueuedMessage): DeadLetter {
  return {
    stage,
    messageId: m.messageId,
    traceId: traceIdOfBody(m.body, m.messageId),
    reason: m.deadLetter?.reason ?? 'unknown',
    sentAt: new Date(m.sentAt).toISOString(),
    ...(m.deadLetter ? { deadLetteredAt: new Date(m.deadLetter.at).toISOString() } : {}),
    bodyBytes: Buffer.byteLength(m.body, 'utf8'),
  };
}
