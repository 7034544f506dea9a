/**
 * The inner message signature (verify stage): structural parsing, then a `node:crypto` verify with the key
 * registered to the **authenticated** sender organisation (SECURITY-CORPUS.md §3, rule 6).
 *
 * Decryption proves nothing about who wrote the content — anyone holding our public key can
 * encrypt to us (A18) — so the JWS is always verified, with a key chosen from configuration by
 * `kid` and then required to belong to the sender the credential authenticated.
 */
import type { LoadedConfig } from '../config/load.js';
import type { Limits, PublicJwk } from '../config/schema.js';
import { EnvelopeError, type RejectionCode, SignatureError } from '../errors.js';
import { type GuardErrorFactory, type JsonObject, parseCompact } from './compact.js';
import {
  type BundleFormat,
  CTY_BY_FORMAT,
  FORBIDDEN_JWS_HEADERS,
  hasAnyMember,
  isSigningAlg,
  KID_PATTERN,
  type SigningAlg,
} from './contract.js';
import { type ItkRouting, ItkRoutingSchema } from './routing.js';
import { PublicKeyObjects, SignatureKeyError, signingInput, verifyJwsSignature } from './signature.js';

/** Header members the contract defines; `typ` is tolerated because some JOSE libraries add it. */
const KNOWN_JWS_HEADERS = new Set(['alg', 'kid', 'cty', 'itk', 'typ']);

/**
 * `cty` values accepted per format. RFC 7515 §4.1.10: a value without `/` means the same as with
 * `application/` in front, so both spellings are one media type; nothing else (no case folding,
 * no parameters) is accepted (A29).
 */
const FORMAT_BY_CTY: ReadonlyMap<string, BundleFormat> = new Map([
  [CTY_BY_FORMAT.xml, 'xml'],
  [CTY_BY_FORMAT.json, 'json'],
  [`application/${CTY_BY_FORMAT.xml}`, 'xml'],
  [`application/${CTY_BY_FORMAT.json}`, 'json'],
]);

/** The allow-listed JWS protected header. */
export interface SignedHeader {
  alg: SigningAlg;
  kid: string;
  cty: (typeof CTY_BY_FORMAT)[BundleFormat];
  itk: ItkRouting;
  typ?: string;
}

/** A structurally valid inner JWS. Nothing in it is authenticated yet. */
export interface ParsedSigned {
  /** The compact JWS as received: its `header.payload` is the signing input. */
  compact: string;
  /** The payload segment decoded, as checked canonical by {@link parseSigned}: the Bundle bytes. */
  payload: Uint8Array;
  /** The signature segment decoded, likewise. */
  signature: Uint8Array;
  header: SignedHeader;
  alg: SigningAlg;
  kid: string;
  format: BundleFormat;
  /** The signed `itk` routing header, authenticated only once {@link verifySigned} succeeds. */
  routing: ItkRouting;
}

/** What a verified signature establishes. */
export interface VerifiedSigned {
  /** The exact Bundle bytes the sender signed. */
  payload: Uint8Array;
  format: BundleFormat;
  routing: ItkRouting;
}

/**
 * Parse and allow-list the decrypted inner JWS.
 *
 * Throws {@link SignatureError}: `SIGNATURE_MALFORMED` for anything structural (including
 * plaintext that is not a JWS at all — signature stripping, A18), `SIGNATURE_ALG_NOT_ALLOWED`,
 * `SIGNATURE_HEADER_NOT_ALLOWED` for `b64`, `crit`, key-carrying or unknown parameters; and
 * {@link EnvelopeError} `MESSAGE_TOO_LARGE` over `limits.maxSealedBytes`.
 *
 * @example
 * ```ts
 * const parsed = parseSigned(await decryptSealed(sealed, keys), config.doc.limits);
 * ```
 */
export function parseSigned(
  compact: string | Uint8Array,
  limits: Pick<Limits, 'maxSealedBytes'>,
): ParsedSigned {
  if (typeof compact !== 'string') {
    if (compact.length > limits.maxSealedBytes) throw signedGuardError('too-large', 'over the size limit');
    // latin1 maps each byte to one char, so non-ASCII bytes survive to fail the alphabet check.
    compact = Buffer.from(compact.buffer, compact.byteOffset, compact.byteLength).toString('latin1');
  }
  // Payload and signature come back decoded by their canonical check (decodeCanonical): the
  // payload is decoded once, here, and never re-read from the string.
  const { segments, header, bytes } = parseCompact(compact, {
    maxBytes: limits.maxSealedBytes,
    segments: 3,
    fail: signedGuardError,
    decode: SIGNED_BYTE_SEGMENTS,
  });
  if (segments[1] === '') malformed('payload is empty');
  if (segments[2] === '') malformed('signature is missing');
  const [, payload, signature] = bytes;
  if (!payload || !signature) malformed('segments are missing');

  const checked = checkHeader(header);
  const format = checked.cty === CTY_BY_FORMAT.xml ? 'xml' : 'json';
  return {
    compact,
    payload: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength),
    signature,
    header: checked,
    alg: checked.alg,
    kid: checked.kid,
    format,
    routing: checked.itk,
  };
}

/** Payload and signature: the segments used as bytes. */
const SIGNED_BYTE_SEGMENTS = [1, 2] as const;

function checkHeader(header: JsonObject): SignedHeader {
  if (hasAnyMember(header, FORBIDDEN_JWS_HEADERS)) {
    fail('SIGNATURE_HEADER_NOT_ALLOWED', 'message signature header carries a parameter that is not accepted');
  }
  for (const name of Object.keys(header)) {
    if (!KNOWN_JWS_HEADERS.has(name)) {
      fail('SIGNATURE_HEADER_NOT_ALLOWED', 'message signature header carries an unknown parameter');
    }
  }
  const { alg, kid, cty, itk, typ } = header;
  if (typeof alg !== 'string') malformed('alg is required');
  if (!isSigningAlg(alg)) fail('SIGNATURE_ALG_NOT_ALLOWED', 'message signature alg is not allowed');
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) malformed('kid is missing or not a valid key id');
  if (typeof cty !== 'string') malformed('cty is required');
  // Exact match of one of the two spellings, no case folding (A29).
  const format = FORMAT_BY_CTY.get(cty);
  if (!format) {
    fail(
      'SIGNATURE_HEADER_NOT_ALLOWED',
      'message signature cty must be fhir+xml or fhir+json (application/ prefix optional)',
    );
  }
  if (typ !== undefined && typeof typ !== 'string') malformed('typ must be a string');
  const routing = ItkRoutingSchema.safeParse(itk);
  if (!routing.success) malformed('itk routing header is missing or invalid');
  // Held in the short form whichever spelling was sent.
  const checked: SignedHeader = { alg, kid, cty: CTY_BY_FORMAT[format], itk: routing.data };
  if (typ !== undefined) checked.typ = typ;
  return checked;
}

/**
 * Verify the inner JWS with the key registered under its `kid`, which must belong to
 * `expectedSenderOds` (the organisation the credential authenticated, or that its actor acts for).
 * The JWS header `alg` must equal the registered key's `alg`, and only that algorithm is verified.
 *
 * Bindings between this routing, the JWE routing, the credential and the MessageHeader are the
 * verify stage's job; this function only proves who signed which bytes.
 *
 * @example
 * ```ts
 * const { payload, format, routing } = await verifySigned(parsed, principal.organisation, config);
 * ```
 */
export async function verifySigned(
  parsed: ParsedSigned,
  expectedSenderOds: string,
  config: LoadedConfig,
): Promise<VerifiedSigned> {
  const entry = config.senderKeyByKid.get(parsed.kid);
  if (!entry) fail('SIGNATURE_KEY_UNKNOWN', 'message signature key is not registered');
  if (entry.ods !== expectedSenderOds) {
    fail('SIGNATURE_KEY_NOT_SENDERS', 'message signature key belongs to another organisation');
  }
  if (parsed.alg !== entry.jwk.alg) {
    fail('SIGNATURE_ALG_NOT_ALLOWED', 'message signature alg does not match the registered key');
  }
  // node:crypto on the guarded segments (signature.ts): same checks as jose's compactVerify with
  // the one registered algorithm, without its base64url and WebCrypto costs.
  const key = senderKey(entry.ods, entry.jwk);
  let valid: boolean;
  try {
    valid = verifyJwsSignature(entry.jwk.alg, key, signingInput(parsed.compact), parsed.signature);
  } catch (error) {
    if (!(error instanceof SignatureKeyError)) throw error;
    // A registered key unfit for its alg (an RSA key under 2048 bits): refused as jose refused it.
    throw new SignatureError('SIGNATURE_INVALID', 'message signature is invalid', {
      cause: { joseCode: 'TypeError' },
    });
  }
  if (!valid) {
    throw new SignatureError('SIGNATURE_INVALID', 'message signature is invalid', {
      cause: { joseCode: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' },
    });
  }
  return { payload: parsed.payload, format: parsed.format, routing: parsed.routing };
}

/** Imported sender keys per (sender ODS, kid). */
const senderKeys = new PublicKeyObjects();

function senderKey(ods: string, jwk: PublicJwk) {
  return senderKeys.get(`${ods}\u0000${jwk.kid}`, jwk);
}

const signedGuardError: GuardErrorFactory = (failure, message) =>
  failure === 'too-large'
    ? new EnvelopeError('MESSAGE_TOO_LARGE', `message signature: ${message}`)
    : new SignatureError('SIGNATURE_MALFORMED', `message signature: ${message}`);

function fail(code: RejectionCode, message: string): never {
  throw new SignatureError(code, message);
}

function malformed(message: string): never {
  fail('SIGNATURE_MALFORMED', `message signature: ${message}`);
}
