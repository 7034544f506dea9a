/**
 * The deployed handler exports, so the embedded runtime runs exactly the code Lambda runs
 * (ARCHITECTURE.md §4 "one code path"). This is the one place lib/ reaches into functions/.
 */
import { handler as authenticate } from '../../functions/authenticate.js';
import { handler as authorise } from '../../functions/authorise.js';
import { handler as decrypt } from '../../functions/decrypt.js';
import { handler as deliver } from '../../functions/deliver.js';
import { handler as verify } from '../../functions/verify.js';
import type { StageName } from '../pipeline/topology.js';
import type { StageHandler } from './embedded.js';

export const deployedHandlers: Record<StageName, StageHandler> = {
  authenticate,
  authorise,
  decrypt,
  verify,
  deliver,
};
