/**
 * The five stage values by name: the whole pipeline in one process (the embedded and emulator
 * runtimes, tests). A deployed handler imports only its own stage (functions/<stage>.ts), never this.
 */
import { authenticate } from '../stages/authenticate.js';
import { authorise } from '../stages/authorise.js';
import { decrypt } from '../stages/decrypt.js';
import { deliver } from '../stages/deliver.js';
import type { Stage } from '../stages/stage.js';
import { verify } from '../stages/verify.js';
import type { StageName } from './topology.js';

export const PIPELINE_STAGES: Readonly<Record<StageName, Stage>> = Object.freeze({
  authenticate,
  authorise,
  decrypt,
  verify,
  deliver,
});
