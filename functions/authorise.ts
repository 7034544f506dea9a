/** Authorise stage: deny-by-default policy and delegation grants, before any decryption. */
import { createStageHandler } from './commons/stage-handler.js';

export const handler = createStageHandler('authorise');
