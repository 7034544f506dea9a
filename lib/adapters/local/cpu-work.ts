/**
 * The stages' CPU-heavy pure steps, as each worker of the embedded runtime's pool runs them
 * (pool-worker.ts): the very functions a stage calls itself when its composition root gives no
 * {@link CpuWork} port, so both paths are one code.
 */
import type { LoadedConfig } from '../../config/load.js';
import { verifyCredential } from '../../envelope/token.js';
import { parseBundle } from '../../itk3/parse.js';
import type { CpuWork, KeyService } from '../../ports/index.js';
import { openSealedContent } from '../../stages/decrypt.js';
import { signedResponseJws } from '../../stages/deliver.js';
import { verifySignedContent } from '../../stages/verify.js';

/** `keys` opens sealed messages and signs responses: on a worker, its own copy of the keystore. */
export function inThreadCpuWork(config: LoadedConfig, keys: KeyService): CpuWork {
  return {
    verifyCredential: (token, receivedAtMs) => verifyCredential(token, config, receivedAtMs),
    openSealed: (compact, authorisedKid) =>
      openSealedContent(compact, authorisedKid, config.doc.limits, keys),
    verifySignedContent: (input) => verifySignedContent(input, config),
    signResponse: (spec) => signedResponseJws(spec, config.doc.responseSigning.kid, keys),
    parseBundle: async (payload, format) => parseBundle(payload, format),
  };
}
