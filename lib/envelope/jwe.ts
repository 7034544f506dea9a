/**
 * Opening the sealed message: structural parsing (authorise and decrypt stages) and decryption
 * through the {@link KeyService} port, following SECURITY-CORPUS.md §4 to the letter.
 *
 * `jose` cannot decrypt with a KMS-held key (panva/jose#66) and has no "decrypt with this CEK"
 * export, so the key unwrap goes through the port and AES-256-GCM is done here, copying `jose`'s
 * invariants: 96-bit IV, 128-bit tag, AAD = ASCII of the encoded protected header, a random CEK
 * when the unwrap fails, and one error whatever went wrong.
 *
 * Two key-management algorithms, chosen by the recipient's key: `RSA-OAEP-256` (the key service
 * unwraps the CEK) and `ECDH-ES+A256KW` on P-256 (the key service returns the ECDH shared secret Z;
 * the Concat KDF and the AES key unwrap of RFC 7518 §4.6 are done here).
 */
import { createDecipheriv, createHash, createPublicKey, randomBytes } from 'node:crypto';
import type { Limits } from '../config/schema.js';
import { DecryptionError, EnvelopeError, type RejectionCode, TransientError } from '../errors.js';
import type { EcPublicJwk, KeyService } from '../ports/index.js';
import { type GuardErrorFactory, type JsonObject, parseCompact } from './compact.js';
import {
  FORBIDDEN_JWE_HEADERS,
  hasAnyMember,
  isJweAlg,
  JWE_ALG,
  JWE_CTY,
  JWE_ECDH_ALG,
  JWE_ENC,
  type JweAlg,
  KID_PATTERN,
} from './contract.js';
import { type ItkRouting, ItkRoutingSchema } from './routing.js';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const CEK_BYTES = 32;
/** RSA-8192 is 1024 bytes: anything longer cannot be an RSA-OAEP encrypted key. */
const MAX_ENCRYPTED_KEY_BYTES = 1024;

/** Header members the contract defines; `typ` is tolerated because some JOSE libraries add it. */
const KNOWN_JWE_HEADERS = new Set(['alg', 'enc', 'kid', 'cty', 'itk', 'typ']);
/**
 * `cty` spellings of the nested JWS. RFC 7515 §4.1.10 (via RFC 7516 §4.1.12): a value without `/`
 * means the same as with `application/` in front, so `JOSE` is also written `application/JOSE`, or
 * as the media type is registered, `application/jose` (RFC 7515 §9.2.1) — what a sender writing the
 * prefixed form with another JOSE library sends. No other case or parameter (A29).
 */
const JWE_CTY_SPELLINGS: ReadonlySet<unknown> = new Set([
  JWE_CTY,
  `application/${JWE_CTY}`,
  'application/jose',
]);
/** Members only `ECDH-ES+A256KW` defines (RFC 7518 §4.6.1); refused with any other `alg`. */
const KEY_AGREEMENT_HEADERS = new Set(['epk', 'apu', 'apv']);
/** `apu`/`apv` name the parties; nothing legitimate needs more than this. */
const MAX_PARTY_INFO_BYTES = 256;
/** AES-KW output for a 256-bit CEK: the CEK plus the 64-bit integrity block. */
const A256KW_ENCRYPTED_KEY_BYTES = 40;
/** RFC 3394 default initial value, checked by the unwrap. */
const AES_KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
/** P-256 coordinates are 32 bytes: 43 base64url characters. */
const P256_COORDINATE_BYTES = 32;

/** Encrypted key, IV, ciphertext and tag: the segments used as bytes. */
const SEALED_BYTE_SEGMENTS = [1, 2, 3, 4] as const;

/** The allow-listed JWE protected header. */
interface SealedHeader {
  alg: JweAlg;
  enc: typeof JWE_ENC;
  kid: string;
  /** One of {@link JWE_CTY_SPELLINGS}. */
  cty: string;
  itk: ItkRouting;
  typ?: string;
  /** `ECDH-ES+A256KW` only: the sender's ephemeral public key, checked when decrypting. */
  epk?: unknown;
  apu?: string;
  apv?: string;
}

/** The byte parts {@link decryptSealed} needs. */
export interface SealedParts {
  /** Key-management algorithm. @default 'RSA-OAEP-256' */
  alg?: JweAlg;
  /** `ECDH-ES+A256KW`: the `epk` header as received (validated by {@link decryptSealed}). */
  epk?: unknown;
  /** `ECDH-ES+A256KW`: decoded `apu` / `apv` (empty when absent), inputs of the Concat KDF. */
  apu?: Uint8Array;
  apv?: Uint8Array;
  /** Recipient key id. */
  kid: string;
  /** The first segment exactly as received: the AES-GCM additional authenticated data. */
  encodedProtectedHeader: string;
  encryptedKey: Uint8Array;
  iv: Uint8Array;
  ciphertext: Uint8Array;
  tag: Uint8Array;
}

/** A structurally valid sealed message. Nothing in it is authenticated yet. */
export interface ParsedSealed extends SealedParts {
  header: SealedHeader;
  /** The JWE `itk` routing header: a filter until the inner JWS repeats it. */
  routing: ItkRouting;
}

/**
 * Parse and allow-list a compact JWE without any key (authorise stage; decrypt stage first step).
 *
 * Throws {@link EnvelopeError}: `MESSAGE_TOO_LARGE` over `limits.maxSealedBytes`,
 * `ENVELOPE_HEADER_NOT_ALLOWED` for a forbidden or unknown header parameter or a value outside
 * the allow-list, `ENVELOPE_MALFORMED` for everything structural.
 *
 * @example
 * ```ts
 * const parsed = parseSealed(jwe, config.doc.limits);
 * if (!config.recipientByKid.has(parsed.kid)) throw new EnvelopeError('ENVELOPE_KEY_UNKNOWN', '…');
 * ```
 */
export function parseSealed(compact: string, limits: Pick<Limits, 'maxSealedBytes'>): ParsedSealed {
  // The four byte segments come back decoded by the canonical check itself (decodeCanonical): one
  // decode and one encode per segment, no regex pass over the ciphertext and no second decode.
  const { segments, header, bytes } = parseCompact(compact, {
    maxBytes: limits.maxSealedBytes,
    segments: 5,
    fail: sealedGuardError,
    decode: SEALED_BYTE_SEGMENTS,
  });
  const checked = checkHeader(header);
  const encodedProtectedHeader = segments[0] ?? '';
  const [, encryptedKey, iv, ciphertext, tag] = bytes as readonly Buffer[];
  if (!encryptedKey || !iv || !ciphertext || !tag) malformed('segments are missing');
  if (encryptedKey.length === 0 || encryptedKey.length > MAX_ENCRYPTED_KEY_BYTES) {
    malformed('encrypted key has an impossible length');
  }
  if (iv.length !== IV_BYTES) malformed('initialisation vector must be 96 bits');
  if (tag.length !== TAG_BYTES) malformed('authentication tag must be 128 bits');

  const keyAgreement =
    checked.alg === JWE_ECDH_ALG
      ? { epk: checked.epk, apu: partyInfo(checked.apu, 'apu'), apv: partyInfo(checked.apv, 'apv') }
      : {};
  return {
    header: checked,
    routing: checked.itk,
    alg: checked.alg,
    ...keyAgreement,
    kid: checked.kid,
    encodedProtectedHeader,
    encryptedKey,
    iv,
    ciphertext,
    tag,
  };
}

function checkHeader(header: JsonObject): SealedHeader {
  // `epk`/`apu`/`apv` belong to key agreement: accepted with that alg only, refused otherwise.
  const agreement = header.alg === JWE_ECDH_ALG;
  const forbidden = agreement
    ? FORBIDDEN_JWE_HEADERS.filter((name) => !KEY_AGREEMENT_HEADERS.has(name))
    : FORBIDDEN_JWE_HEADERS;
  if (hasAnyMember(header, forbidden)) {
    notAllowed('sealed message header carries a parameter that is not accepted');
  }
  for (const name of Object.keys(header)) {
    if (!KNOWN_JWE_HEADERS.has(name) && !(agreement && KEY_AGREEMENT_HEADERS.has(name))) {
      notAllowed('sealed message header carries an unknown parameter');
    }
  }
  const { alg, enc, kid, cty, itk, typ, epk, apu, apv } = header;
  if (typeof alg !== 'string' || typeof enc !== 'string') malformed('alg and enc are required');
  if (!isJweAlg(alg)) notAllowed('sealed message alg is not allowed');
  if (enc !== JWE_ENC) notAllowed('sealed message enc is not allowed');
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) malformed('kid is missing or not a valid key id');
  if (typeof cty !== 'string' || !JWE_CTY_SPELLINGS.has(cty)) {
    notAllowed('sealed message cty must be JOSE (application/ prefix optional)');
  }
  if (typ !== undefined && typeof typ !== 'string') malformed('typ must be a string');
  const routing = ItkRoutingSchema.safeParse(itk);
  if (!routing.success) malformed('itk routing header is missing or invalid');
  if (apu !== undefined && typeof apu !== 'string') malformed('apu must be a string');
  if (apv !== undefined && typeof apv !== 'string') malformed('apv must be a string');
  const checked: SealedHeader = { alg, enc, kid, cty, itk: routing.data };
  if (typ !== undefined) checked.typ = typ;
  // `epk` is kept as received: a missing or unusable one fails at decrypt like any bad key (no oracle).
  if (agreement) Object.assign(checked, definedMembers({ epk, apu, apv }));
  return checked;
}

function definedMembers(members: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(members).filter(([, value]) => value !== undefined));
}

/** Decode `apu`/`apv` (RFC 7518 §4.6.1.2–3): base64url, bounded; absent is the empty string. */
function partyInfo(encoded: string | undefined, name: string): Uint8Array {
  if (encoded === undefined) return new Uint8Array(0);
  if (!/^[A-Za-z0-9_-]*$/.test(encoded)) malformed(`${name} is not base64url`);
  const bytes = Buffer.from(encoded, 'base64url');
  if (bytes.toString('base64url') !== encoded) malformed(`${name} is not canonical base64url`);
  if (bytes.length > MAX_PARTY_INFO_BYTES) malformed(`${name} is too long`);
  return bytes;
}

/**
 * Decrypt a parsed sealed message through the key service (SECURITY-CORPUS.md §4).
 *
 * Every failure — unknown key, bad encrypted key, wrong CEK length, tag mismatch — surfaces as the
 * same {@link DecryptionError}, after the same work: a failed unwrap continues with a random CEK
 * so it fails at the tag like any tampering (RFC 7516 §11.5, A22). A {@link TransientError} from
 * the key service is rethrown unchanged: throttling is retried, never turned into a rejection.
 * The CEK returned by the key service is zeroed once used, so return a fresh buffer per call.
 *
 * @example
 * ```ts
 * const jwsBytes = await decryptSealed(parseSealed(jwe, limits), ports.keys);
 * ```
 */
export async function decryptSealed(parsed: SealedParts, keys: KeyService): Promise<Uint8Array> {
  const unwrapped =
    (parsed.alg ?? JWE_ALG) === JWE_ECDH_ALG
      ? await agreeAndUnwrap(parsed, keys)
      : await unwrapWithKeyService(parsed, keys);
  const usable = unwrapped !== undefined && unwrapped.length === CEK_BYTES;
  const cek = usable ? Buffer.from(unwrapped as Uint8Array) : randomBytes(CEK_BYTES);
  if (unwrapped) unwrapped.fill(0);

  try {
    // Re-checked here because SealedParts may be built without parseSealed.
    if (parsed.iv.length !== IV_BYTES || parsed.tag.length !== TAG_BYTES) throw new Error('bad iv or tag');
    // authTagLength pins the tag size: without it Node 20/22 accept short tags (DEP0182, A23).
    const decipher = createDecipheriv('aes-256-gcm', cek, parsed.iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(parsed.encodedProtectedHeader, 'ascii'));
    decipher.setAuthTag(parsed.tag);
    const body = decipher.update(parsed.ciphertext);
    // GCM is a stream mode: final() only checks the tag and returns no bytes, so the common case
    // is the update's buffer itself, not a copy of it.
    const rest = decipher.final();
    return rest.length === 0 ? body : Buffer.concat([body, rest]);
  } catch {
    // The cause is deliberately not kept: which step failed must not be observable (A22, A28).
    throw new DecryptionError();
  } finally {
    cek.fill(0);
  }
}

/** RSA-OAEP-256: the key service unwraps the CEK. `undefined` for every non-transient failure. */
async function unwrapWithKeyService(parsed: SealedParts, keys: KeyService): Promise<Uint8Array | undefined> {
  try {
    const result = await keys.unwrapKey(parsed.kid, parsed.encryptedKey);
    return result.ok ? result.cek : undefined;
  } catch (error) {
    if (error instanceof TransientError) throw error;
    // Any other failure of the key service is an unwrap failure like the rest: no distinct answer.
    return undefined;
  }
}

/**
 * ECDH-ES+A256KW (RFC 7518 §4.6): Z from the key service for the validated `epk`, the KEK from the
 * Concat KDF, the CEK from the AES key unwrap. `undefined` for every non-transient failure — no
 * `epk`, another curve, a point not on P-256, a kid that is not an agreement key, a bad wrap — so
 * the caller continues with a random CEK like any other failure.
 */
async function agreeAndUnwrap(parsed: SealedParts, keys: KeyService): Promise<Uint8Array | undefined> {
  const epk = p256PublicJwk(parsed.epk);
  if (!epk) return undefined;
  let sharedSecret: Uint8Array | undefined;
  try {
    const result = await keys.deriveSharedSecret(parsed.kid, epk);
    if (result.ok) sharedSecret = result.sharedSecret;
  } catch (error) {
    if (error instanceof TransientError) throw error;
    return undefined;
  }
  if (!sharedSecret) return undefined;
  const kek = concatKdfA256(sharedSecret, parsed.apu ?? new Uint8Array(0), parsed.apv ?? new Uint8Array(0));
  sharedSecret.fill(0);
  try {
    if (parsed.encryptedKey.length !== A256KW_ENCRYPTED_KEY_BYTES) return undefined;
    const unwrap = createDecipheriv('id-aes256-wrap', kek, AES_KW_IV);
    return Buffer.concat([unwrap.update(parsed.encryptedKey), unwrap.final()]);
  } catch {
    // The RFC 3394 integrity check failed: tampered or another key's. No reason is kept.
    return undefined;
  } finally {
    kek.fill(0);
  }
}

/**
 * The `epk` as a P-256 public JWK, or `undefined`: exactly `kty`, `crv`, `x`, `y`, 32-byte
 * coordinates, and a point on the curve (OpenSSL refuses to import one that is not: invalid-curve
 * attacks need such points).
 */
function p256PublicJwk(epk: unknown): EcPublicJwk | undefined {
  if (typeof epk !== 'object' || epk === null || Array.isArray(epk)) return undefined;
  const { kty, crv, x, y, ...rest } = epk as Record<string, unknown>;
  if (kty !== 'EC' || crv !== 'P-256' || Object.keys(rest).length > 0) return undefined;
  if (!isCoordinate(x) || !isCoordinate(y)) return undefined;
  const jwk: EcPublicJwk = { kty, crv, x, y };
  try {
    createPublicKey({ key: { ...jwk }, format: 'jwk' });
  } catch {
    return undefined;
  }
  return jwk;
}

function isCoordinate(value: unknown): value is string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(value)) return false;
  const bytes = Buffer.from(value, 'base64url');
  return bytes.length === P256_COORDINATE_BYTES && bytes.toString('base64url') === value;
}

/**
 * Concat KDF of RFC 7518 §4.6.2 (NIST SP 800-56A) for a 256-bit key: one SHA-256 round over
 * counter 1 ‖ Z ‖ AlgorithmID ‖ PartyUInfo ‖ PartyVInfo ‖ SuppPubInfo, each variable field
 * prefixed with its 32-bit big-endian length; AlgorithmID is the `alg` itself in key-wrap mode.
 */
export function concatKdfA256(sharedSecret: Uint8Array, apu: Uint8Array, apv: Uint8Array): Buffer {
  return createHash('sha256')
    .update(uint32(1))
    .update(sharedSecret)
    .update(lengthPrefixed(Buffer.from(JWE_ECDH_ALG, 'ascii')))
    .update(lengthPrefixed(apu))
    .update(lengthPrefixed(apv))
    .update(uint32(256))
    .digest();
}

function uint32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

function lengthPrefixed(bytes: Uint8Array): Buffer {
  return Buffer.concat([uint32(bytes.length), bytes]);
}

const sealedGuardError: GuardErrorFactory = (failure, message) =>
  new EnvelopeError(
    failure === 'too-large' ? 'MESSAGE_TOO_LARGE' : 'ENVELOPE_MALFORMED',
    `sealed message: ${message}`,
  );

function fail(code: RejectionCode, message: string): never {
  throw new EnvelopeError(code, message);
}

function malformed(message: string): never {
  fail('ENVELOPE_MALFORMED', `sealed message: ${message}`);
}

function notAllowed(message: string): never {
  fail('ENVELOPE_HEADER_NOT_ALLOWED', message);
}
