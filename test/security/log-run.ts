/**
 * The run both log suites capture: the demo scenario (every sample sealed by its sender plus the
 * hostile set) through the deployed handlers, with a short KMS throttling burst so the retry path
 * logs too. Returns the captured lines, the audit trail, and the secrets that must not appear.
 */
import { createPrivateKey } from 'node:crypto';
import { compactDecrypt } from 'jose';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { TransientError } from '../../lib/errors.js';
import { EmbeddedPipeline, VirtualClock } from '../../lib/runtime/embedded.js';
import { buildScenario } from '../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { makeTempDir } from '../support/world.js';
import { captureOutput, type Secrets } from './log-scan.js';

export interface CapturedRun {
  lines: string[];
  auditLines: string[];
  secrets: Secrets;
  messages: number;
}

export async function captureScenarioRun(world: DemoWorld): Promise<CapturedRun> {
  const now = Date.now();
  const scenario = await buildScenario(world, now);
  let throttled = 0;
  const keys = new SoftwareKeyService(world.keystore, {
    beforeCall: (operation) => {
      if (operation === 'unwrapKey' && throttled++ < 3) {
        throw new TransientError('KEY_SERVICE_UNAVAILABLE', 'ThrottlingException');
      }
    },
  });
  const pipeline = new EmbeddedPipeline({
    config: world.config,
    keys,
    baseDir: makeTempDir('itk3-logs-'),
    clock: new VirtualClock(now),
  });

  const capture = captureOutput();
  try {
    for (const phase of [1, 2]) {
      for (const m of scenario.filter((s) => (s.phase ?? 1) === phase)) {
        if (m.direct || m.credential === undefined) {
          pipeline.submitRaw(m.sealed, m.credential ? `Bearer ${m.credential}` : undefined);
        } else {
          await pipeline.submit(m.credential, m.sealed);
        }
      }
      await pipeline.drain();
    }
  } finally {
    capture.stop();
  }

  // Secrets: every credential, sealed message and inner JWS, every private key member, and every
  // Bundle (decrypted here with the recipients' keys, so hostile ones count too).
  const bundles: Uint8Array[] = [];
  const envelopes: string[] = [];
  const recipientKeys = Object.values(world.recipients).map((r) => ({
    kid: r.key.kid,
    key: createPrivateKey({ key: r.key.privateJwk as never, format: 'jwk' }),
  }));
  for (const m of scenario) {
    if (m.credential) envelopes.push(m.credential);
    envelopes.push(m.sealed);
    if (m.bundle) bundles.push(m.bundle);
    for (const { key } of recipientKeys) {
      try {
        const { plaintext } = await compactDecrypt(m.sealed, key, {
          keyManagementAlgorithms: ['RSA-OAEP-256'],
          contentEncryptionAlgorithms: ['A256GCM'],
        });
        const text = new TextDecoder().decode(plaintext);
        const parts = text.split('.');
        if (parts.length === 3 && /^[A-Za-z0-9_-]+$/.test(parts[1] ?? '')) {
          envelopes.push(text);
          bundles.push(Buffer.from(parts[1] ?? '', 'base64url'));
        } else {
          bundles.push(plaintext);
        }
        break;
      } catch {
        // not for this key, or tampered: nothing readable to protect
      }
    }
  }
  for (const entry of world.keystore.keys) {
    const jwk = entry.privateJwk as Record<string, unknown>;
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) {
      if (typeof jwk[member] === 'string') envelopes.push(jwk[member] as string);
    }
  }

  return {
    lines: capture.lines(),
    auditLines: pipeline.audit.all().map((e) => JSON.stringify(e)),
    secrets: { bundles, envelopes },
    messages: scenario.length,
  };
}
