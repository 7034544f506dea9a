/**
 * The pipeline's shape: the stages in order, and the queue each stage forwards to. Each stage
 * reads the queue named after it (`QueueName` = `StageName`); deliver is the end of the line.
 */

/** Stage names, in pipeline order. `ingest` is the HTTP front door, not a stage. */
export const STAGES = ['authenticate', 'authorise', 'decrypt', 'verify', 'deliver'] as const;
export type StageName = (typeof STAGES)[number];
export type QueueName = StageName;

/** The stage that reads each queue, and the queue each stage forwards to. */
export const NEXT_STAGE: Record<StageName, StageName | undefined> = {
  authenticate: 'authorise',
  authorise: 'decrypt',
  decrypt: 'verify',
  verify: 'deliver',
  deliver: undefined,
};

/**
 * Where every other stage sends a permanent failure: deliver answers it (a signed ITK3 response to
 * an authenticated sender). A rejection inside deliver has nowhere else to go: it is retried, then
 * dead-lettered.
 */
export const REJECTIONS_TO: QueueName = 'deliver';
