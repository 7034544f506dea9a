/** Decrypt stage: KMS unwraps the content key; AES-GCM with jose's invariants; one uniform error. */
import { createStageHandler } from './commons/stage-handler.js';

export const handler = createStageHandler('decrypt');
