/** Verify stage: inner signature by the sender's registered key, all bindings, ITK3 rules, duplicates. */
import { createStageHandler } from './commons/stage-handler.js';

export const handler = createStageHandler('verify');
