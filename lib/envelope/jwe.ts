/**
 * Opening the sealed message: structural parsing (authorise and decrypt stages) and decryption
 * through the {@link KeyService} port, following SECURITY-CORPUS.md §4 to the letter.
 *
 * `jose` cannot decrypt with a KMS-held key (panva/jose#66) and has no "decrypt with this CEK"
 * export, so the key unwrap goes through the port and AES-256-GCM is done here, copying `jose`'s
 * invariants: 96-bit IV, 128-bit tag, AAD = ASCII of the encoded protected header, a random CEK
 * when the unwrap fails, and one error whatever went wrong.
 */
import { createDecipheriv, randomBytes } from 'node:crypto';
import type { Limits } from '../config/schema.js';
import { DecryptionError, EnvelopeError, type RejectionCode, TransientError } from '../errors.js';
import type { KeyService } from '../ports/index.js';
import { type ItkRouting, ItkRoutingSchema } from '../record.js';
import { type GuardErrorFactory, type JsonObject, parseCompact } from './compact.js';
import { FORBIDDEN_JWE_HEADERS, hasAnyMember, JWE_ALG, JWE_CTY, JWE_ENC, KID_PATTERN } from './contract.js';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const CEK_BYTES = 32;
/** RSA-8192 is 1024 bytes: anything longer cannot be an RSA-OAEP encrypted key. */
const MAX_ENCRYPTED_KEY_BYTES = 1024;

/** Header members the contract defines; `typ` is tolerated because some JOSE libraries add it. */
const KNOWN_JWE_HEADERS = new Set(['alg', 'enc', 'kid', 'cty', 'itk', 'typ']);

/** The allow-listed JWE protected header. */
export interface SealedHeader {
  alg: typeof JWE_ALG;
  enc: typeof JWE_ENC;
  kid: string;
  cty: typeof JWE_CTY;
  itk: ItkRouting;
  typ?: string;
}

/** The byte parts {@link decryptSealed} needs. */
export interface SealedParts {
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
  const { segments, header } = parseCompact(compact, {
    maxBytes: limits.maxSealedBytes,
    segments: 5,
    fail: sealedGuardError,
  });
  const checked = checkHeader(header);
  const [encodedProtectedHeader = '', encKey = '', ivSeg = '', ctSeg = '', tagSeg = ''] = segments;

  // parseCompact has checked the alphabet and canonical form of every segment, so decode directly:
  // checking again (decodeSegment) ran the alphabet regex over the whole ciphertext a second time,
  // ≈ 40 % of parseSealed on large messages (scripts/bench).
  const encryptedKey = Buffer.from(encKey, 'base64url');
  const iv = Buffer.from(ivSeg, 'base64url');
  const ciphertext = Buffer.from(ctSeg, 'base64url');
  const tag = Buffer.from(tagSeg, 'base64url');
  if (encryptedKey.length === 0 || encryptedKey.length > MAX_ENCRYPTED_KEY_BYTES) {
    malformed('encrypted key has an impossible length');
  }
  if (iv.length !== IV_BYTES) malformed('initialisation vector must be 96 bits');
  if (tag.length !== TAG_BYTES) malformed('authentication tag must be 128 bits');

  return {
    header: checked,
    routing: checked.itk,
    kid: checked.kid,
    encodedProtectedHeader,
    encryptedKey,
    iv,
    ciphertext,
    tag,
  };
}

function checkHeader(header: JsonObject): SealedHeader {
  if (hasAnyMember(header, FORBIDDEN_JWE_HEADERS)) {
    notAllowed('sealed message header carries a parameter that is not accepted');
  }
  for (const name of Object.keys(header)) {
    if (!KNOWN_JWE_HEADERS.has(name)) notAllowed('sealed message header carries an unknown parameter');
  }
  const { alg, enc, kid, cty, itk, typ } = header;
  if (typeof alg !== 'string' || typeof enc !== 'string') malformed('alg and enc are required');
  if (alg !== JWE_ALG) notAllowed('sealed message alg is not allowed');
  if (enc !== JWE_ENC) notAllowed('sealed message enc is not allowed');
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) malformed('kid is missing or not a valid key id');
  if (cty !== JWE_CTY) notAllowed('sealed message cty must be JOSE');
  if (typ !== undefined && typeof typ !== 'string') malformed('typ must be a string');
  const routing = ItkRoutingSchema.safeParse(itk);
  if (!routing.success) malformed('itk routing header is missing or invalid');
  const checked: SealedHeader = { alg, enc, kid, cty, itk: routing.data };
  if (typ !== undefined) checked.typ = typ;
  return checked;
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
  let unwrapped: Uint8Array | undefined;
  try {
    const result = await keys.unwrapKey(parsed.kid, parsed.encryptedKey);
    if (result.ok) unwrapped = result.cek;
  } catch (error) {
    if (error instanceof TransientError) throw error;
    // Any other failure of the key service is an unwrap failure like the rest: no distinct answer.
    unwrapped = undefined;
  }
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
    const plaintext = Buffer.concat([decipher.update(parsed.ciphertext), decipher.final()]);
    return plaintext;
  } catch {
    // The cause is deliberately not kept: which step failed must not be observable (A22, A28).
    throw new DecryptionError();
  } finally {
    cek.fill(0);
  }
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
