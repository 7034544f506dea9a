/**
 * The crypto floor, measured in the same process and run as the pipeline: the work no correct
 * implementation of this pipeline can avoid for one message, each primitive timed alone.
 *
 * - credential verify: `jose` `jwtVerify` (what the authenticate stage calls), ES256 and PS256 with
 *   the demo issuers' keys; the floor uses the algorithm of the benchmark sender's issuer (PS256);
 * - CEK unwrap: `node:crypto` RSA-OAEP-SHA-256 private decrypt with the recipient key in use
 *   (RSA-4096), RSA-2048 for reference;
 * - inner JWS verify: `node:crypto` RS512 verify over the real signing input of each size class
 *   (hashing the whole payload is part of it); `jose` `compactVerify` is reported beside it, since
 *   its base64url decoding is what large messages pay (PERFORMANCE.md §2.3);
 * - AES-256-GCM decrypt of the real ciphertext size, and `Buffer` base64url decoding of the JWE
 *   ciphertext and JWS payload segments (the cheapest possible decode).
 *
 * Each primitive is looped for a fixed time, repeated; the median CPU time per call is kept.
 */
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { compactVerify, importJWK, jwtVerify } from 'jose';
import { tokenFor } from '../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { cpuMsSince, type Summary, summarise } from './stats.js';

export interface FloorPlan {
  repeats: number;
  /** Minimum wall time of one timed loop. */
  loopMs: number;
}

export interface FloorItem {
  name: string;
  /** CPU ms per call, over the repeats. */
  cpuMs: Summary;
  /** Wall ms per call, over the repeats. */
  wallMs: Summary;
}

export interface SizeFloor {
  size: string;
  bundleBytes: number;
  items: FloorItem[];
  /** Sum of the medians of the items that make up one message's floor. */
  floorMs: number;
  /** 1000 / floorMs: messages per second one core could do if it did nothing else. */
  floorThroughput: number;
  /** Names of the items summed into `floorMs`. */
  composition: string[];
}

export interface FloorResult {
  common: FloorItem[];
  sizes: SizeFloor[];
}

/** The floor of one message at each recipient key size (same items, other unwrap). */
export interface FloorByModulus {
  /** ms per message with the RSA-4096 unwrap (the key in use). */
  rsa4096: number;
  /** ms per message with the RSA-2048 unwrap. */
  rsa2048: number;
}

const UNWRAP_4096 = 'CEK unwrap RSA-OAEP-256 4096 (node:crypto)';
const UNWRAP_2048 = 'CEK unwrap RSA-OAEP-256 2048 (node:crypto, reference)';

/** `floorMs` of a size with the RSA-2048 unwrap in place of the RSA-4096 one. */
export function floorByModulus(floor: FloorResult, size: SizeFloor): FloorByModulus {
  const unwrap = (name: string) => floor.common.find((i) => i.name === name)?.cpuMs.median ?? Number.NaN;
  return { rsa4096: size.floorMs, rsa2048: size.floorMs - unwrap(UNWRAP_4096) + unwrap(UNWRAP_2048) };
}

/** The floor of the real 63 KB sample (GP0001: ES256 credential, ES256 inner signature). */
export interface SampleFloor {
  bundleBytes: number;
  items: FloorItem[];
  floor: FloorByModulus;
}

/** Time `fn` in a loop for at least `loopMs`, `repeats` times; per-call CPU and wall medians. */
export async function measure(
  name: string,
  plan: FloorPlan,
  fn: () => unknown | Promise<unknown>,
): Promise<FloorItem> {
  for (let i = 0; i < 3; i += 1) await fn(); // warm-up: JIT, key import caches
  const cpu: number[] = [];
  const wall: number[] = [];
  for (let r = 0; r < plan.repeats; r += 1) {
    let calls = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    do {
      await fn();
      calls += 1;
    } while (performance.now() - t0 < plan.loopMs || calls < 3);
    wall.push((performance.now() - t0) / calls);
    cpu.push(cpuMsSince(c0) / calls);
  }
  return { name, cpuMs: summarise(cpu), wallMs: summarise(wall) };
}

export interface FloorSizeInput {
  label: string;
  bundle: Uint8Array;
}

export async function measureCryptoFloor(
  world: DemoWorld,
  sizes: readonly FloorSizeInput[],
  plan: FloorPlan,
): Promise<FloorResult> {
  const now = Date.now();
  const config = world.config;
  const verifyToken = async (issuerKey: DemoWorld['issuers']['nhs'], token: string) => {
    const jwk = config.doc.issuers.find((i) => i.issuer === issuerKey.iss)?.keys[0];
    if (!jwk) throw new Error('benchmark issuer has no configured key');
    const key = await importJWK({ ...jwk }, jwk.alg);
    return () =>
      jwtVerify(token, key, {
        algorithms: [jwk.alg],
        issuer: issuerKey.iss,
        audience: config.doc.audience,
        typ: 'JWT',
        maxTokenAge: 300,
        currentDate: new Date(now),
      });
  };
  // One token each, verified over and over: jose keeps no per-token cache, so this is the real cost.
  const es256 = await verifyToken(world.issuers.nhs, await tokenFor(world, world.senders.GP0001, now));
  const ps256 = await verifyToken(world.issuers.federation, await tokenFor(world, world.senders.X26, now));

  const recipient = createPrivateKey({ key: { ...world.recipients.A83627.key.privateJwk }, format: 'jwk' });
  const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const oaep = (key: KeyObject) => {
    const wrapped = publicEncrypt(
      { key: createPublicKey(key), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      randomBytes(32),
    );
    return () =>
      privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, wrapped);
  };

  const common = [
    await measure('credential verify ES256 (jose)', plan, es256),
    await measure('credential verify PS256 (jose)', plan, ps256),
    await measure(UNWRAP_4096, plan, oaep(recipient)),
    await measure(UNWRAP_2048, plan, oaep(rsa2048)),
  ];

  const senderPrivate = createPrivateKey({ key: { ...world.senders.X26.key.privateJwk }, format: 'jwk' });
  const senderPublic = createPublicKey(senderPrivate);
  const senderJwk = config.senderKeyByKid.get(world.senders.X26.key.kid)?.jwk;
  if (!senderJwk) throw new Error('benchmark sender has no configured key');
  const senderJoseKey = await importJWK({ ...senderJwk }, senderJwk.alg);

  const sizeFloors: SizeFloor[] = [];
  for (const size of sizes) {
    // The inner JWS exactly as a sender builds it (RS512), and the JWE's AES-GCM layer around it.
    const header = Buffer.from(JSON.stringify({ alg: 'RS512', kid: 'k', cty: 'fhir+xml' })).toString(
      'base64url',
    );
    const payloadB64 = Buffer.from(size.bundle).toString('base64url');
    const signingInput = Buffer.from(`${header}.${payloadB64}`, 'ascii');
    const signature = sign('sha512', signingInput, senderPrivate);
    const jws = `${header}.${payloadB64}.${signature.toString('base64url')}`;
    const jwsBytes = Buffer.from(jws, 'ascii');
    const cek = randomBytes(32);
    const iv = randomBytes(12);
    const aad = Buffer.from('eyJhbGciOiJSU0EtT0FFUC0yNTYifQ', 'ascii');
    const cipher = createCipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 });
    cipher.setAAD(aad);
    const ciphertext = Buffer.concat([cipher.update(jwsBytes), cipher.final()]);
    const tag = cipher.getAuthTag();
    const ciphertextB64 = ciphertext.toString('base64url');

    const items = [
      await measure('inner JWS verify RS512 (node:crypto)', plan, () =>
        verify('sha512', signingInput, senderPublic, signature),
      ),
      await measure('inner JWS verify RS512 (jose compactVerify, reference)', plan, () =>
        compactVerify(jws, senderJoseKey, { algorithms: ['RS512'] }),
      ),
      await measure('AES-256-GCM decrypt (node:crypto)', plan, () => {
        const d = createDecipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 });
        d.setAAD(aad);
        d.setAuthTag(tag);
        return Buffer.concat([d.update(ciphertext), d.final()]);
      }),
      await measure('base64url decode, JWE ciphertext + JWS payload (Buffer)', plan, () => {
        Buffer.from(ciphertextB64, 'base64url');
        return Buffer.from(payloadB64, 'base64url');
      }),
    ];
    const composition = [
      'credential verify PS256 (jose)',
      UNWRAP_4096,
      'inner JWS verify RS512 (node:crypto)',
      'AES-256-GCM decrypt (node:crypto)',
      'base64url decode, JWE ciphertext + JWS payload (Buffer)',
    ];
    const all = [...common, ...items];
    const floorMs = composition.reduce(
      (sum, name) => sum + (all.find((i) => i.name === name)?.cpuMs.median ?? Number.NaN),
      0,
    );
    sizeFloors.push({
      size: size.label,
      bundleBytes: size.bundle.byteLength,
      items,
      floorMs,
      floorThroughput: 1000 / floorMs,
      composition,
    });
  }
  return { common, sizes: sizeFloors };
}

/** AES-256-GCM around `plaintext`, and a function that decrypts it (the JWE content layer). */
function gcmLayer(plaintext: Buffer): { ciphertextB64: string; decrypt: () => Buffer } {
  const cek = randomBytes(32);
  const iv = randomBytes(12);
  const aad = Buffer.from('eyJhbGciOiJSU0EtT0FFUC0yNTYifQ', 'ascii');
  const cipher = createCipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();
  return {
    ciphertextB64: ciphertext.toString('base64url'),
    decrypt: () => {
      const d = createDecipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 });
      d.setAAD(aad);
      d.setAuthTag(tag);
      return Buffer.concat([d.update(ciphertext), d.final()]);
    },
  };
}

/**
 * The floor of the real sample as its sender seals it: ES256 credential (`jose`, as in the main
 * floor) + unwrap + ES256 inner verify (`node:crypto`) + AES-256-GCM + base64url of its sizes.
 */
export async function measureSampleFloor(
  world: DemoWorld,
  bundle: Uint8Array,
  floor: FloorResult,
  plan: FloorPlan,
): Promise<SampleFloor> {
  const signer = createPrivateKey({ key: { ...world.senders.GP0001.key.privateJwk }, format: 'jwk' });
  const signerPublic = createPublicKey(signer);
  const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'k', cty: 'fhir+xml' })).toString(
    'base64url',
  );
  const payloadB64 = Buffer.from(bundle).toString('base64url');
  const signingInput = Buffer.from(`${header}.${payloadB64}`, 'ascii');
  const signature = sign('sha256', signingInput, { key: signer, dsaEncoding: 'ieee-p1363' });
  const jws = Buffer.from(`${header}.${payloadB64}.${signature.toString('base64url')}`, 'ascii');
  const gcm = gcmLayer(jws);
  const items = [
    await measure('inner JWS verify ES256 (node:crypto)', plan, () =>
      verify('sha256', signingInput, { key: signerPublic, dsaEncoding: 'ieee-p1363' }, signature),
    ),
    await measure('AES-256-GCM decrypt (node:crypto)', plan, gcm.decrypt),
    await measure('base64url decode, JWE ciphertext + JWS payload (Buffer)', plan, () => {
      Buffer.from(gcm.ciphertextB64, 'base64url');
      return Buffer.from(payloadB64, 'base64url');
    }),
  ];
  const common = (name: string) => floor.common.find((i) => i.name === name)?.cpuMs.median ?? Number.NaN;
  const rest = common('credential verify ES256 (jose)') + items.reduce((sum, i) => sum + i.cpuMs.median, 0);
  return {
    bundleBytes: bundle.byteLength,
    items,
    floor: { rsa4096: rest + common(UNWRAP_4096), rsa2048: rest + common(UNWRAP_2048) },
  };
}
