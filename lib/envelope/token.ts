/**
 * The sender credential (ARCHITECTURE.md §2, item 1): minting for senders, tests and the CLI, and
 * the authenticate-stage verification of SECURITY-CORPUS.md §3 and ITK3.md §6.
 *
 * Verification never lets the token choose anything: the header must pass the contract's allow-list
 * before the issuer is looked up, the key comes from that issuer's configured keys only, and
 * `jwtVerify` is called with the one algorithm of that key and every claim check switched on.
 */
import { randomUUID } from 'node:crypto';
import { type JWTPayload, SignJWT } from 'jose';
import { isClientOf, type LoadedConfig } from '../config/load.js';
import type { IssuerConfig, PublicJwk } from '../config/schema.js';
import { scopeCovers } from '../config/scope.js';
import { AuthenticationError, type RejectionCode } from '../errors.js';
import type { Principal } from '../record.js';
import { decodeJsonSegment, type GuardErrorFactory, type JsonObject, parseCompact } from './compact.js';
import {
  FORBIDDEN_JWS_HEADERS,
  hasAnyMember,
  isSigningAlg,
  type KeyLike,
  KID_PATTERN,
  ODS_PATTERN,
  type SigningAlg,
  toJoseKey,
} from './contract.js';
import { PublicKeyObjects, SignatureKeyError, signingInput, verifyJwsSignature } from './signature.js';

/** Default credential lifetime when neither `exp` nor `lifetimeSeconds` is given. */
export const DEFAULT_TOKEN_LIFETIME_SECONDS = 300;

/** Claims the verifier requires on every credential. */
const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'iat', 'exp', 'jti'];
/**
 * The order jose checked their presence in (required claims, then those implied by maxTokenAge,
 * audience and issuer, reversed and de-duplicated): iss, aud, iat, jti, exp, sub. The first
 * missing one is the claim named in the rejection.
 */
const PRESENCE_ORDER = [...new Set([...REQUIRED_CLAIMS, 'iat', 'aud', 'iss'].reverse())];

/** Bound on `sub`, `jti` and actor ids: they become store keys and audit fields. */
const MAX_ID_LENGTH = 256;

/** Options for {@link mintToken}. Times are NumericDate seconds. */
export interface MintTokenOptions {
  /** The issuer's private key (CryptoKey, KeyObject or private JWK). */
  key: KeyLike;
  kid: string;
  alg: SigningAlg;
  iss: string;
  sub: string;
  aud: string | string[];
  /** The sending organisation's ODS code. */
  organisation: string;
  /**
   * Claim that carries `organisation`; a dotted path (`org.ods`) creates nested objects.
   * @default 'ods'
   */
  organisationClaim?: string;
  /** Delegation chain, outermost (the current actor) first; becomes nested RFC 8693 `act`. */
  actors?: readonly string[];
  roles?: readonly string[];
  /** @default 'roles' */
  rolesClaim?: string;
  /** @default now */
  iat?: number;
  /** @default iat + lifetimeSeconds */
  exp?: number;
  /** @default DEFAULT_TOKEN_LIFETIME_SECONDS */
  lifetimeSeconds?: number;
  nbf?: number;
  /** @default a random UUID */
  jti?: string;
  /**
   * Extra claims, applied last: they may override the ones above (a value of `undefined` removes
   * a claim), which is how tests build hostile tokens.
   */
  claims?: Record<string, unknown>;
  /** Extra protected header parameters, applied after `alg`, `kid` and `typ`. */
  header?: Record<string, unknown>;
  /** Clock for the default `iat`, ms since epoch. @default Date.now() */
  nowMs?: number;
}

/**
 * Mint a sender credential: a compact JWS with header `{alg, kid, typ: 'JWT'}` and the claims of
 * the contract.
 *
 * @example
 * ```ts
 * const token = await mintToken({
 *   key: privateKey, kid: 'gp0001-2025', alg: 'ES256',
 *   iss: 'gp0001-ehr', sub: 'gp0001-ehr', aud: 'https://itk3.example.nhs.uk/messages',
 *   organisation: 'GP0001',
 * });
 * ```
 */
export async function mintToken(opts: MintTokenOptions): Promise<string> {
  const iat = opts.iat ?? Math.floor((opts.nowMs ?? Date.now()) / 1000);
  const exp = opts.exp ?? iat + (opts.lifetimeSeconds ?? DEFAULT_TOKEN_LIFETIME_SECONDS);
  const payload: Record<string, unknown> = {
    iss: opts.iss,
    sub: opts.sub,
    aud: opts.aud,
    iat,
    exp,
    jti: opts.jti ?? randomUUID(),
  };
  if (opts.nbf !== undefined) payload.nbf = opts.nbf;
  setPath(payload, opts.organisationClaim ?? 'ods', opts.organisation);
  if (opts.roles) setPath(payload, opts.rolesClaim ?? 'roles', [...opts.roles]);
  const act = actClaim(opts.actors ?? []);
  if (act) payload.act = act;
  Object.assign(payload, opts.claims);

  const key = await toJoseKey(opts.key, opts.alg);
  return new SignJWT(payload as JWTPayload)
    .setProtectedHeader({ alg: opts.alg, kid: opts.kid, typ: 'JWT', ...opts.header })
    .sign(key);
}

/** What a verified credential establishes: a {@link Principal} plus its expiry. */
export interface VerifiedCredential extends Principal {
  /** Configured issuer id (same value as `issuer`, named for readers of the authenticate stage). */
  issuerId: string;
  /** `exp` claim, NumericDate seconds: the once-store TTL is derived from it. */
  exp: number;
}

/**
 * The checks {@link verifyCredential} makes, in the order it makes them. `itk3 explain` is told
 * each one that passed, so it can show where a credential stopped.
 */
export const CREDENTIAL_CHECKS = [
  'present',
  'structure',
  'header',
  'issuer',
  'key',
  'signature',
  'claims',
  'organisation',
  'scope',
  'client',
  'delegation-chain',
] as const;
export type CredentialCheck = (typeof CREDENTIAL_CHECKS)[number];

/**
 * Verify a credential at receipt time (authenticate stage). `onPass` (explain only) is told each
 * check of {@link CREDENTIAL_CHECKS} as it passes.
 *
 * Throws {@link AuthenticationError} with a catalogue code; messages and causes never carry the
 * token or its claims. Replay (`iss`, `jti`) is the caller's job: it needs the once-store.
 *
 * @example
 * ```ts
 * const principal = await verifyCredential(bearer, config, record.receivedAt);
 * await once.putIfAbsent(`${principal.iss}#${principal.jti}`, record.traceId, ttl);
 * ```
 */
export async function verifyCredential(
  token: string,
  config: LoadedConfig,
  receivedAtMs: number,
  onPass: (check: CredentialCheck) => void = () => {},
): Promise<VerifiedCredential> {
  const limits = config.doc.limits;
  if (typeof token !== 'string' || token.length === 0) reject('TOKEN_MISSING', 'no credential');
  onPass('present');

  // The signature comes back decoded by its canonical check (as in parseSigned): decoded once.
  const { segments, header, bytes } = parseCompact(token, {
    maxBytes: limits.maxTokenBytes,
    segments: 3,
    fail: tokenGuardError,
    decode: [2],
  });

  if (hasAnyMember(header, FORBIDDEN_JWS_HEADERS)) {
    reject('TOKEN_MALFORMED', 'credential header carries a parameter that is not accepted');
  }
  onPass('structure');
  if (!isSigningAlg(header.alg)) reject('TOKEN_ALG_NOT_ALLOWED', 'credential alg is not allowed');
  const alg = header.alg;
  if (typeof header.kid !== 'string' || !KID_PATTERN.test(header.kid)) {
    reject('TOKEN_MALFORMED', 'credential kid is missing or not a valid key id');
  }
  const kid = header.kid;
  // Exact, not jose's case-insensitive comparison: the contract says `JWT` (A29 typ games).
  if (header.typ !== 'JWT') reject('TOKEN_CLAIM_INVALID', 'credential typ must be JWT');
  onPass('header');

  // Read `iss` with our own guarded decoder: jose's decodeJwt has no size, depth or duplicate check.
  const unverified = decodeJsonSegment(segments[1] ?? '', {
    maxBytes: limits.maxTokenBytes,
    fail: tokenGuardError,
    what: 'claims set',
  });
  if (typeof unverified.iss !== 'string') reject('TOKEN_CLAIM_INVALID', 'credential has no iss');
  const issuer = config.issuersByIss.get(unverified.iss);
  if (!issuer) reject('TOKEN_ISSUER_UNKNOWN', 'credential issuer is not trusted');
  onPass('issuer');

  const jwk = issuer.keys.find((k) => k.kid === kid);
  if (!jwk) reject('TOKEN_KEY_UNKNOWN', 'no key with this kid for the issuer');
  if (jwk.alg !== alg) reject('TOKEN_ALG_NOT_ALLOWED', 'credential alg does not match the issuer key');
  onPass('key');

  // Signature with node:crypto on the guarded segments, then the claim checks jose's jwtVerify made
  // with these options, in its order and with its codes (checkStandardClaims).
  const key = issuerKey(issuer, jwk);
  let valid: boolean;
  try {
    valid = verifyJwsSignature(jwk.alg, key, signingInput(token), bytes[2] ?? Buffer.alloc(0));
  } catch (error) {
    if (!(error instanceof SignatureKeyError)) throw error;
    throw new AuthenticationError('TOKEN_MALFORMED', 'credential could not be verified', {
      cause: { joseCode: 'TypeError' },
    });
  }
  if (!valid) {
    throw new AuthenticationError('TOKEN_SIGNATURE_INVALID', 'credential signature is invalid', {
      cause: { joseCode: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' },
    });
  }
  onPass('signature');
  // The claims set verified above is exactly the segment `unverified` was decoded from.
  checkStandardClaims(unverified, issuer.issuer, config.doc.audience, limits, receivedAtMs);
  return judgeClaims(unverified, issuer, config, receivedAtMs, onPass);
}

/**
 * The standard claim checks, as `jose` `jwtVerify` made them with `issuer`, `audience`,
 * `requiredClaims`, `maxTokenAge`, `clockTolerance` and `currentDate` (jose 6, `validateClaimsSet`):
 * same order, so the same claim is named when several fail, and the same codes.
 */
function checkStandardClaims(
  claims: JsonObject,
  iss: string,
  audience: string,
  limits: LoadedConfig['doc']['limits'],
  receivedAtMs: number,
): void {
  for (const claim of PRESENCE_ORDER) {
    if (!Object.hasOwn(claims, claim)) claimFailed(claim, 'missing');
  }
  if (claims.iss !== iss) claimFailed('iss', 'check_failed');
  const aud = claims.aud;
  const audienceOk =
    typeof aud === 'string' ? aud === audience : Array.isArray(aud) && aud.includes(audience);
  if (!audienceOk) claimFailed('aud', 'check_failed');
  const tolerance = limits.clockSkewSeconds;
  const now = Math.floor(receivedAtMs / 1000);
  const iat = claims.iat;
  if (typeof iat !== 'number') claimFailed('iat', 'invalid');
  const nbf = claims.nbf;
  if (nbf !== undefined) {
    if (typeof nbf !== 'number') claimFailed('nbf', 'invalid');
    if (nbf > now + tolerance) claimFailed('nbf', 'check_failed');
  }
  const exp = claims.exp;
  if (exp !== undefined) {
    if (typeof exp !== 'number') claimFailed('exp', 'invalid');
    if (exp <= now - tolerance) expired('exp');
  }
  const age = now - iat;
  if (age - tolerance > limits.maxTokenLifetimeSeconds) expired('iat');
  if (age < -tolerance) claimFailed('iat', 'check_failed');
}

/** A failed claim check, with the code and cause jose's `JWTClaimValidationFailed` mapped to. */
function claimFailed(claim: string, reason: 'missing' | 'invalid' | 'check_failed'): never {
  const [code, message] = joseCodeFor('ERR_JWT_CLAIM_VALIDATION_FAILED', claim, reason);
  throw new AuthenticationError(code, message, {
    cause: { joseCode: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim },
  });
}

/** An expired credential (`exp` passed, or `iat` older than the maximum token age). */
function expired(claim: 'exp' | 'iat'): never {
  const [code, message] = joseCodeFor('ERR_JWT_EXPIRED', claim, 'check_failed');
  throw new AuthenticationError(code, message, { cause: { joseCode: 'ERR_JWT_EXPIRED', claim } });
}

/** Checks `jwtVerify` does not make, on a payload whose signature and standard claims passed. */
function judgeClaims(
  payload: JsonObject,
  issuer: IssuerConfig,
  config: LoadedConfig,
  receivedAtMs: number,
  onPass: (check: CredentialCheck) => void,
): VerifiedCredential {
  const limits = config.doc.limits;
  const { iss, sub, aud, iat, exp, jti } = payload;
  if (typeof iss !== 'string') reject('TOKEN_CLAIM_INVALID', 'credential claim "iss" is invalid');
  if (!isId(sub)) reject('TOKEN_CLAIM_INVALID', 'credential claim "sub" is invalid');
  if (!isId(jti)) reject('TOKEN_CLAIM_INVALID', 'credential claim "jti" is invalid');
  if (typeof iat !== 'number' || typeof exp !== 'number' || !Number.isFinite(iat) || !Number.isFinite(exp)) {
    reject('TOKEN_CLAIM_INVALID', 'credential time claims are invalid');
  }
  // A token for several audiences is also valid elsewhere (A15): accept only ours alone.
  const audiences = Array.isArray(aud) ? aud : [aud];
  if (audiences.length !== 1 || audiences[0] !== config.doc.audience) {
    reject('TOKEN_CLAIM_INVALID', 'credential claim "aud" must name only this audience');
  }
  if (exp - iat > limits.maxTokenLifetimeSeconds) {
    reject('TOKEN_LIFETIME_TOO_LONG', 'credential lifetime is over the limit');
  }
  // jose checks this too (maxTokenAge); kept so the rule does not depend on an option staying set.
  if (iat > receivedAtMs / 1000 + limits.clockSkewSeconds) {
    reject('TOKEN_NOT_YET_VALID', 'credential was issued in the future');
  }
  if (issuer.requireIssEqualsSub && iss !== sub) {
    reject('TOKEN_CLAIM_INVALID', 'credential iss and sub must be equal');
  }
  onPass('claims');

  const organisation = readPath(payload, issuer.organisationClaim);
  if (typeof organisation !== 'string' || !ODS_PATTERN.test(organisation)) {
    reject('TOKEN_ORGANISATION_MISSING', 'credential carries no organisation code');
  }
  onPass('organisation');
  // Federation scope: an issuer vouches only for the organisations configured for it, and only
  // through the clients registered under it. Both are judged here, before a principal exists, so
  // a rejection is answered as unauthenticated and never lands in that organisation's target.
  if (!scopeCovers(issuer.organisations, organisation)) {
    reject('TOKEN_ORGANISATION_OUT_OF_SCOPE', "credential organisation is outside its issuer's scope");
  }
  onPass('scope');
  // An organisation that is not registered has no clients; authorise answers it (20003).
  const sender = config.sendersByOds.get(organisation);
  if (sender && !isClientOf(sender, issuer.id, sub)) {
    reject(
      'TOKEN_CLIENT_NOT_REGISTERED',
      'credential subject is not a client registered under its issuer for this organisation',
    );
  }
  onPass('client');

  const actors = actorChain(payload.act, iss, limits.maxDelegationDepth);
  const roles = issuer.rolesClaim ? rolesFrom(readPath(payload, issuer.rolesClaim)) : [];
  onPass('delegation-chain');
  return { issuer: issuer.id, issuerId: issuer.id, iss, subject: sub, organisation, actors, roles, jti, exp };
}

/**
 * RFC 8693 `act`, nested: outermost is the current actor. Bounded walk. Every actor is vouched for
 * by the credential's issuer, whose grants are checked at authorise; an `act.iss` naming any other
 * issuer would claim another issuer's word without its signature, so it is refused.
 */
function actorChain(act: unknown, iss: string, maxDepth: number): string[] {
  const actors: string[] = [];
  let current = act;
  while (current !== undefined) {
    if (current === null || typeof current !== 'object' || Array.isArray(current)) {
      reject('TOKEN_CLAIM_INVALID', 'credential claim "act" is invalid');
    }
    const node = current as JsonObject;
    if (!isId(node.sub)) reject('TOKEN_CLAIM_INVALID', 'credential claim "act" has no valid sub');
    if (Object.hasOwn(node, 'iss') && node.iss !== iss) {
      reject('TOKEN_CLAIM_INVALID', 'credential claim "act" names an issuer other than the credential\'s');
    }
    actors.push(node.sub);
    if (actors.length > maxDepth) reject('DELEGATION_CHAIN_TOO_DEEP', 'delegation chain is too deep');
    current = Object.hasOwn(node, 'act') ? node.act : undefined;
  }
  return actors;
}

function rolesFrom(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((r) => typeof r === 'string' && r.length > 0)) {
    reject('TOKEN_CLAIM_INVALID', 'credential roles claim must be an array of strings');
  }
  return [...(value as string[])];
}

function isId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID_LENGTH;
}

/** Own-property walk of a dotted path: never follows the prototype chain (`__proto__`, …). */
function readPath(obj: JsonObject, path: string): unknown {
  let current: unknown = obj;
  for (const part of path.split('.')) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, part)) return undefined;
    current = (current as JsonObject)[part];
  }
  return current;
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  const last = parts.pop() as string;
  let current = obj;
  for (const part of parts) {
    const next = current[part];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) current[part] = {};
    current = current[part] as Record<string, unknown>;
  }
  current[last] = value;
}

function actClaim(actors: readonly string[]): Record<string, unknown> | undefined {
  let act: Record<string, unknown> | undefined;
  for (let i = actors.length - 1; i >= 0; i--) {
    act = act ? { sub: actors[i], act } : { sub: actors[i] };
  }
  return act;
}

/** Imported issuer keys per (issuer id, kid). */
const issuerKeys = new PublicKeyObjects();

function issuerKey(issuer: IssuerConfig, jwk: PublicJwk) {
  return issuerKeys.get(`${issuer.id}\u0000${jwk.kid}`, jwk);
}

const tokenGuardError: GuardErrorFactory = (failure, message) =>
  new AuthenticationError(
    failure === 'too-large' ? 'TOKEN_TOO_LARGE' : 'TOKEN_MALFORMED',
    `credential: ${message}`,
  );

function reject(code: RejectionCode, message: string): never {
  throw new AuthenticationError(code, message);
}

/** The catalogue code and message for a claim failure, in jose's error vocabulary. */
function joseCodeFor(
  joseCode: string,
  claim: string | undefined,
  reason: string | undefined,
): [RejectionCode, string] {
  switch (joseCode) {
    case 'ERR_JWT_EXPIRED':
      return ['TOKEN_EXPIRED', claim === 'iat' ? 'credential is too old' : 'credential has expired'];
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      // Only a failed time comparison means "not yet"; a missing or ill-typed claim is invalid.
      if (reason === 'check_failed' && claim === 'nbf')
        return ['TOKEN_NOT_YET_VALID', 'credential is not yet valid'];
      if (reason === 'check_failed' && claim === 'iat') {
        return ['TOKEN_NOT_YET_VALID', 'credential was issued in the future'];
      }
      return ['TOKEN_CLAIM_INVALID', `credential claim "${claim ?? 'unknown'}" is invalid`];
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return ['TOKEN_SIGNATURE_INVALID', 'credential signature is invalid'];
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return ['TOKEN_ALG_NOT_ALLOWED', 'credential alg is not allowed'];
    default:
      return ['TOKEN_MALFORMED', 'credential is malformed'];
  }
}
