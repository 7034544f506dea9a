/**
 * The stages' CPU-heavy pure steps, as each worker of the embedded runtime's pool runs them
 * (pool-worker.ts): the very functions a stage calls itself when its composition root gives no
 * {@link CpuWork} port, so both paths are one code.
 */
import type { LoadedConfig } from '../../config/load.js';
import { parseSigned, verifySigned } from '../../envelope/jws.js';
import { verifyCredential } from '../../envelope/token.js';
import { parseBundle } from '../../itk3/parse.js';
import type { CpuWork } from '../../ports/index.js';

export function inThreadCpuWork(config: LoadedConfig): CpuWork {
  return {
    verifyCredential: (token, receivedAtMs) => verifyCredential(token, config, receivedAtMs),
    openSigned: async (compact, expectedSenderOds) =>
      verifySigned(parseSigned(compact, config.doc.limits), expectedSenderOds, config),
    parseBundle: async (payload, format) => parseBundle(payload, format),
  };
}
