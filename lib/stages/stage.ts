/**
 * What a stage is: a named step that takes one pipeline record and the ports, and either forwards
 * the record (to the next stage of lib/pipeline/topology.ts) or says how it ended. The batch step
 * (lib/stages/batch.ts) runs a {@link Stage} over an SQS batch; each stage module exports one.
 */
import type { SQSRecord } from 'aws-lambda';
import type { LoadedConfig } from '../config/load.js';
import type { StageName } from '../pipeline/topology.js';
import type { Ports } from '../ports/index.js';
import type { PipelineRecord } from '../record.js';

/** What every stage function receives besides its record. */
export interface StageContext {
  ports: Ports;
  config: LoadedConfig;
}

/** How one record left a stage. */
export type StageResult =
  | { kind: 'forward'; record: PipelineRecord }
  | { kind: 'delivered' }
  | { kind: 'responded' }
  /** The outcome was already recorded by an earlier run of the same record. */
  | { kind: 'reprocessed' };

export interface Stage {
  readonly name: StageName;
  /**
   * The record a queue message carries. Default: the pipeline record JSON of every queue but the
   * inbound one (authenticate decodes what senders and the MESH poller put on it).
   */
  readonly decode?: (sqsRecord: SQSRecord) => PipelineRecord;
  /** Run the stage on one record; `inboundMessageId` is the queue's id of the message carrying it. */
  run(record: PipelineRecord, ctx: StageContext, inboundMessageId: string): Promise<StageResult>;
}
