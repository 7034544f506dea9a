import type { IngestResult } from '../ingest.js';
import type { Ports } from '../ports/index.js';
import type { MessageOutcome } from './embedded.js';

/**
 * What drivers of a pipeline (the demo, the load run, benchmarks) need of a runtime: the embedded
 * one (lib/runtime/embedded.ts) and the emulator one (lib/runtime/emulator.ts) both provide it.
 */
export interface PipelineRuntime {
  ports: Ports;
  /** Through the front door, as the HTTP ingest function does. */
  submit(credential: string, sealed: string): Promise<IngestResult>;
  /** Straight onto the inbound queue (direct SQS ingestion); returns the trace id. */
  submitRaw(sealed: string, authorization?: string): string | Promise<string>;
  /** Run until every queue is empty; returns the handler invocations made. */
  drain(opts?: { onProgress?: (invocations: number) => void }): Promise<number>;
  outcome(traceId: string): Promise<MessageOutcome>;
}
