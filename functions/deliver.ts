/** Deliver stage: message to the recipient target, signed ITK3 responses to the sender, audit. */
import { createStageHandler } from './commons/stage-handler.js';

export const handler = createStageHandler('deliver');
