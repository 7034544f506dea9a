/** Authenticate stage: verifies the sender credential (federation, replay, receipt-time checks). */
import { createStageHandler } from './commons/stage-handler.js';

export const handler = createStageHandler('authenticate');
