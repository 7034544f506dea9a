/**
 * The stages' CPU-heavy pure steps in the calling thread: the default when a composition root
 * gives no {@link CpuWork} port, and what each worker of the embedded runtime's pool runs
 * (lib/adapters/local/pool-worker.ts), so both paths are one code.
 */
import type { LoadedConfig } from '../config/load.js';
import { parseSigned, verifySigned } from '../envelope/jws.js';
import { verifyCredential } from '../envelope/token.js';
import { parseBundle } from '../itk3/parse.js';
import type { CpuWork } from '../ports/index.js';

export function inThreadCpuWork(config: LoadedConfig): CpuWork {
  return {
    verifyCredential: (token, receivedAtMs) => verifyCredential(token, config, receivedAtMs),
    openSigned: async (compact, expectedSenderOds) =>
      verifySigned(parseSigned(compact, config.doc.limits), expectedSenderOds, config),
    parseBundle: async (payload, format) => parseBundle(payload, format),
  };
}
