/**
 * The recipient key choice (issue 14 item 3), side by side in one run: for RSA-2048, RSA-3072,
 * RSA-4096 (`RSA-OAEP-256`) and P-256 (`ECDH-ES+A256KW`), the per-message cost of the key step
 * alone, the crypto floor of a small message with that key, and the embedded pipeline's small-message
 * throughput with a world whose recipients hold that key — and their ratio.
 *
 * The floor is the main floor's small-message composition (credential verify PS256 + inner JWS
 * verify RS512 + AES-256-GCM + base64url decode) with its RSA-4096 unwrap replaced by the key step
 * of the choice: RSA-OAEP-SHA-256 private decrypt, or for ECDH-ES the `epk` import, the ECDH, the
 * Concat KDF and the AES key unwrap (what lib/envelope/jwe.ts does with a local key).
 */
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { SoftwareKeyService } from '../../lib/adapters/local/software-keys.js';
import { concatKdfA256 } from '../../lib/envelope/jwe.js';
import { createWorld } from '../../lib/testkit/world.js';
import { type FloorPlan, type FloorResult, measure } from './crypto-floor.js';
import { benchEmbeddedSize } from './embedded.js';
import type { Summary } from './stats.js';
import { prepareMessages, SIZE_CLASSES } from './workload.js';

const RECIPIENT_CHOICES = [
  { label: 'RSA-2048', alg: 'RSA-OAEP-256', modulus: 2048 },
  { label: 'RSA-3072', alg: 'RSA-OAEP-256', modulus: 3072 },
  { label: 'RSA-4096', alg: 'RSA-OAEP-256', modulus: 4096 },
  { label: 'ECDH-ES P-256', alg: 'ECDH-ES+A256KW', modulus: undefined },
] as const;

export interface RecipientKeyRow {
  label: string;
  /** CPU ms of the key step (unwrap, or agreement + KDF + AES-KW). */
  keyStepMs: Summary;
  /** Small-message floor with this key, ms. */
  floorMs: number;
  floorThroughput: number;
  /** Embedded small-message throughput, msg/s. */
  embedded: Summary;
  /** embedded ÷ floor. */
  ratio: number;
  /** Encrypted-key segment length in characters. */
  encryptedKeyChars: number;
}

export interface RecipientKeyPlan {
  floor: FloorPlan;
  backlog: number;
  paced: number;
  runs: number;
}

/** The key step for one recipient private key, as a closure the floor loop can time. */
function keyStep(privateJwk: Record<string, unknown>): () => unknown {
  const key = createPrivateKey({ key: { ...privateJwk } as never, format: 'jwk' });
  if (key.asymmetricKeyType === 'rsa') {
    const wrapped = publicEncrypt(
      { key: createPublicKey(key), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      randomBytes(32),
    );
    return () =>
      privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, wrapped);
  }
  // What a sender does once per message: an ephemeral pair, the same KDF, an AES-KW of the CEK.
  const ephemeral = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { x, y } = ephemeral.publicKey.export({ format: 'jwk' });
  const epk = { kty: 'EC', crv: 'P-256', x, y };
  const empty = new Uint8Array(0);
  const kek = concatKdfA256(
    diffieHellman({ privateKey: ephemeral.privateKey, publicKey: createPublicKey(key) }),
    empty,
    empty,
  );
  const iv = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
  const wrap = createCipheriv('id-aes256-wrap', kek, iv);
  const wrapped = Buffer.concat([wrap.update(randomBytes(32)), wrap.final()]);
  return () => {
    const publicKey = createPublicKey({ key: { ...epk } as never, format: 'jwk' });
    const z = diffieHellman({ privateKey: key, publicKey });
    const unwrap = createDecipheriv('id-aes256-wrap', concatKdfA256(z, empty, empty), iv);
    return Buffer.concat([unwrap.update(wrapped), unwrap.final()]);
  };
}

/**
 * One row per recipient key choice. `floor` is the main run's floor (RSA-4096 world): its small
 * composition minus its RSA-4096 unwrap is the part every choice shares.
 */
export async function benchRecipientKeys(
  floor: FloorResult,
  plan: RecipientKeyPlan,
  now: number,
  log: (line: string) => void,
): Promise<RecipientKeyRow[]> {
  const small = SIZE_CLASSES.find((s) => s.label === 'small');
  const smallFloor = floor.sizes.find((s) => s.size === 'small');
  const unwrap4096 = floor.common.find((i) => i.name.startsWith('CEK unwrap RSA-OAEP-256 4096'));
  if (!small || !smallFloor || !unwrap4096) throw new Error('the main floor has no small-message figures');
  const shared = smallFloor.floorMs - unwrap4096.cpuMs.median;

  const rows: RecipientKeyRow[] = [];
  for (const choice of RECIPIENT_CHOICES) {
    log(`recipient keys ${choice.label}: world, key step, embedded small…`);
    const world = await createWorld({
      now,
      recipientAlg: choice.alg,
      ...(choice.modulus ? { recipientModulus: choice.modulus } : {}),
    });
    const step = await measure(
      `key step ${choice.label}`,
      plan.floor,
      keyStep(world.recipients.A83627.key.privateJwk),
    );
    const floorMs = shared + step.cpuMs.median;
    const backlog = await prepareMessages(world, small, plan.backlog, { now, infAck: true });
    const paced = await prepareMessages(world, small, plan.paced, { now, infAck: true });
    const keys = new SoftwareKeyService(world.keystore);
    const result = await benchEmbeddedSize(world, keys, small, backlog, paced, now, plan.runs, log);
    rows.push({
      label: choice.label,
      keyStepMs: step.cpuMs,
      floorMs,
      floorThroughput: 1000 / floorMs,
      embedded: result.throughput,
      ratio: result.throughput.median / (1000 / floorMs),
      encryptedKeyChars: backlog[0]?.sealed.split('.')[1]?.length ?? 0,
    });
  }
  return rows;
}
