/**
 * What a stage is: a named step that takes one pipeline record and the ports it names, and either
 * forwards the record (to the next stage of lib/pipeline/topology.ts) or ends its trace. Each stage
 * module exports one {@link Stage} value; the batch step (lib/stages/batch.ts) runs it over an SQS
 * batch, and the handler composer (lib/runtime/stage-handler.ts) wraps that in middy.
 */
import type { SQSRecord } from 'aws-lambda';
import type { LoadedConfig } from '../config/load.js';
import type { StageName } from '../pipeline/topology.js';
import type { AuditEntry, Ports } from '../ports/index.js';
import type { PipelineRecord } from '../record.js';

export type PortName = keyof Ports;

/** What every stage function receives besides its record: the ports it uses, and the configuration. */
export interface StageContext<P extends PortName = PortName> {
  ports: Pick<Ports, P>;
  config: LoadedConfig;
}

/** The ports the batch step itself uses: forwarding, the audit trail and its once-markers, claim-check clean-up, time. */
export type BatchPortName = 'queues' | 'audit' | 'once' | 'blobs' | 'clock';

/** An audit entry a stage asks the batch step to write; the batch step stamps the time. */
export type AuditEvent = Omit<AuditEntry, 'at'>;

/** How one record left a stage. */
export type StageResult =
  | { kind: 'forward'; record: PipelineRecord }
  | {
      /**
       * The trace ended here: the batch step writes `audit` once per trace (however often SQS hands
       * the record over), then removes the trace's claim-check blobs. `outcome` is what it counts
       * when this run was the first to record it; `reprocessed` counts nothing.
       */
      kind: 'end';
      outcome: 'delivered' | 'responded' | 'reprocessed';
      audit: readonly AuditEvent[];
    }
  /** The outcome was already recorded by an earlier run of the same record. */
  | { kind: 'reprocessed' };

/** A pipeline stage. `P` names the ports its own code uses, on top of the batch step's. */
export interface Stage<P extends PortName = PortName> {
  readonly name: StageName;
  /**
   * The record a queue message carries. Default: the pipeline record JSON every queue but the
   * inbound one holds (authenticate decodes what senders and the MESH poller put there).
   */
  readonly decode?: (sqsRecord: SQSRecord) => PipelineRecord;
  /** Run the stage on one record; `inboundMessageId` is the queue's id of the message carrying it. */
  run(
    record: PipelineRecord,
    ctx: StageContext<P | BatchPortName>,
    inboundMessageId: string,
  ): Promise<StageResult>;
}
