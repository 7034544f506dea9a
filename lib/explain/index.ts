/**
 * `itk3 explain`: why a message would be accepted or rejected, check by check, against a
 * configuration — without delivering, consuming a `jti`, signing or writing any state.
 *
 * It runs the real code: the credential verifier and the policy (told each check that passes), the
 * envelope parser, and the authenticate, authorise, decrypt and verify stage functions on dry-run
 * ports (./ports.ts). Nothing here decides anything; it only records where the real code stopped,
 * the rule that matched or the deny-by-default, and what would have to change (./codes.ts).
 *
 * Two modes: a credential and a sealed message (with a key service, so it can decrypt and verify),
 * or, without keys, the claims and routing a sender intends (authenticate and authorise only).
 */
import { randomUUID } from 'node:crypto';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { PublicJwk } from '../config/schema.js';
import { parseSealed } from '../envelope/jwe.js';
import type { ItkRouting } from '../envelope/routing.js';
import { CREDENTIAL_CHECKS, type CredentialCheck, verifyCredential } from '../envelope/token.js';
import { ERROR_CATALOGUE, type Itk3ResponseCode, type RejectionCode, RejectionError } from '../errors.js';
import type { StageName } from '../pipeline/topology.js';
import {
  authorise as decide,
  grantExpiry,
  POLICY_CHECKS,
  type PolicyCheck,
  ruleMismatches,
} from '../policy/index.js';
import type { KeyService } from '../ports/index.js';
import { type PipelineRecord, RECORD_VERSION } from '../record.js';
import { authenticateRecord } from '../stages/authenticate.js';
import { authoriseRecord } from '../stages/authorise.js';
import { decryptRecord } from '../stages/decrypt.js';
import type { StageContext } from '../stages/stage.js';
import { verifyRecord } from '../stages/verify.js';
import { describeCode } from './codes.js';
import { DryRunOnceStore, dryRunPorts, type RememberedLookup } from './ports.js';

export { REJECTION_CODES, rejectionCodesMarkdown } from './codes.js';
export { renderExplanation } from './render.js';

export type CheckStatus = 'passed' | 'failed' | 'not-reached' | 'skipped';

interface ExplainedCheck {
  id: string;
  description: string;
  status: CheckStatus;
  /** On the failed check: the stable code, its ITK3 code and the stage's own message. */
  code?: RejectionCode;
  itk3Code?: Itk3ResponseCode;
  detail?: string;
  /** On a failed or skipped check: why, or what would have to change. */
  note?: string;
}

interface ExplainedStage {
  stage: StageName;
  status: CheckStatus;
  checks: ExplainedCheck[];
  note?: string;
}

interface PolicyExplanation {
  /** The rule (and grant) that allowed the message. */
  ruleId?: string;
  delegationId?: string;
  /** True when no rule matched: deny by default. */
  denyByDefault: boolean;
  /** The sender's rules and why each does not match (when denied by default). */
  candidates: { ruleId: string; mismatches: string[] }[];
}

export interface Explanation {
  mode: 'sealed' | 'claims';
  receivedAt: string;
  /**
   * `deliver`: every check passed; `authorised`: authenticate and authorise passed, and decrypt and
   * verify could not run (claims mode, or no keystore).
   */
  outcome: 'deliver' | 'authorised' | 'reject' | 'error';
  stage?: StageName;
  code?: string;
  itk3Code?: Itk3ResponseCode;
  detail?: string;
  /** What would have to change for the message to pass; empty when it passes. */
  toPass: string[];
  policy?: PolicyExplanation;
  stages: ExplainedStage[];
}

/** A credential and a sealed message, as a sender submits them. */
export interface SealedInput {
  credential?: string;
  sealed: string;
  /** Receipt time, ms since epoch. @default now */
  receivedAt?: number;
}

/** What a sender intends, without keys: the credential claims and the routing header. */
export interface ClaimsInput {
  claims: Record<string, unknown>;
  routing: Omit<ItkRouting, 'id'> & { id?: string };
  /** Recipient key id the sender would encrypt to. @default the recipient's first configured key */
  kid?: string;
  receivedAt?: number;
}

export type ExplainInput = SealedInput | ClaimsInput;

export interface ExplainerOptions {
  config: LoadedConfig;
  /** Needed to decrypt and verify a sealed message; only `unwrapKey` is ever called. */
  keys?: KeyService;
  /** Read-only view of remembered jti, message and document ids (the once-store's keys). */
  remembered?: RememberedLookup;
}

const CREDENTIAL_TEXT: Record<CredentialCheck, string> = {
  present: 'a credential was presented',
  structure: 'compact JWS within maxTokenBytes, canonical base64url, no key-carrying or extension header',
  header: 'header alg is RS512, PS256 or ES256, kid is a valid key id, typ is JWT',
  issuer: 'iss is a trusted issuer',
  key: "kid is a key of that issuer, with the header's alg",
  signature: 'signature verifies with the issuer key',
  claims: 'aud names only this gateway; iat, exp, nbf at receipt time within skew; lifetime; sub and jti',
  organisation: "the issuer's organisation claim holds an ODS code",
  scope: 'the issuer may speak for that organisation (federation scope)',
  client: '(issuer, sub) is a registered client of the organisation',
  'delegation-chain': 'act chain well-formed, no deeper than maxDelegationDepth, no other issuer named',
};

const POLICY_TEXT: Record<PolicyCheck, string> = {
  'issuer-configured': 'the principal issuer is still configured',
  'issuer-scope': 'the issuer still may speak for the organisation',
  'routing-sender': 'itk.from is the organisation the credential speaks for',
  'sender-known': 'the sending organisation is registered',
  'client-of-sender': 'the client is one of the sender organisation',
  'recipient-known': 'itk.to is a recipient served here',
  'recipient-key': 'the JWE kid is a key of that recipient',
  delegation: 'every actor holds an unexpired grant for this issuer, organisation and event',
  rule: 'a policy rule allows this sender, client, event and recipient (deny by default)',
};

/**
 * Checks of the stages explain runs whole. A failure is placed by its code; each code belongs to
 * the check where the stage first raises it, so every check listed before it has really passed.
 */
const DECRYPT_CHECKS: CodedCheck[] = [
  { id: 'envelope-key', text: 'the JWE kid is the one authorised', codes: ['ENVELOPE_KEY_UNKNOWN'] },
  { id: 'decrypt', text: 'content key unwrapped, AES-256-GCM tag valid', codes: ['DECRYPT_FAILED'] },
  { id: 'plaintext', text: 'the decrypted content is text', codes: ['ENVELOPE_MALFORMED'] },
];

const VERIFY_CHECKS: CodedCheck[] = [
  {
    id: 'signature-structure',
    text: 'inner compact JWS, header {alg, kid, cty fhir+xml|fhir+json, itk} only',
    codes: ['SIGNATURE_MALFORMED', 'SIGNATURE_HEADER_NOT_ALLOWED', 'SIGNATURE_ALG_NOT_ALLOWED'],
  },
  {
    id: 'signer-key',
    text: 'the JWS kid is a signing key registered to the authenticated organisation',
    codes: ['SIGNATURE_KEY_UNKNOWN', 'SIGNATURE_KEY_NOT_SENDERS'],
  },
  {
    id: 'signature',
    text: 'the signature verifies over the exact Bundle bytes',
    codes: ['SIGNATURE_INVALID'],
  },
  {
    id: 'routing-binding',
    text: 'JWE itk = signed itk; signed sender = credential organisation',
    codes: ['BINDING_MISMATCH'],
  },
  { id: 'recipient-served', text: 'the signed recipient is served here', codes: ['RECIPIENT_NOT_SERVED'] },
  { id: 'size', text: "Bundle within maxBundleBytes and the rule's maxBytes", codes: ['MESSAGE_TOO_LARGE'] },
  {
    id: 'bundle',
    text: 'the payload is one ITK3 Bundle every reader reads the same way',
    codes: [
      'BUNDLE_UNREADABLE',
      'BUNDLE_NOT_ITK3',
      'BUNDLE_BYTE_ORDER_MARK',
      'BUNDLE_FOREIGN_CONTENT',
      'BUNDLE_AMBIGUOUS',
      'DUPLICATE_FULL_URL',
      'ODS_IDENTIFIER_AMBIGUOUS',
    ],
  },
  {
    id: 'itk3-header',
    text: "ITK3 header rules, and the matched rule's MessageDefinition, RecipientType and acks",
    codes: [
      'ITK3_HEADER_INVALID',
      'HANDLING_SPEC_INVALID',
      'INF_ACK_INVALID',
      'BUS_ACK_INVALID',
      'MESSAGE_DEFINITION_UNSUPPORTED',
      'MESSAGE_DEFINITION_VERSION_UNSUPPORTED',
      'SENDER_REFERENCE_INVALID',
      'RECIPIENT_TYPE_INVALID',
      'PAYLOAD_INVALID',
      'REFERENCE_UNRESOLVED',
    ],
  },
  {
    id: 'header-binding',
    text: 'MessageHeader sender, id, event, receiver and mailbox = the signed routing',
    codes: ['HEADER_CONTRADICTS_ENVELOPE'],
  },
  {
    id: 'duplicates',
    text: "MessageHeader id and document id (the focus Bundle's id) not seen before",
    codes: ['DUPLICATE_MESSAGE', 'DUPLICATE_DOCUMENT'],
  },
];

interface CodedCheck {
  id: string;
  text: string;
  /** Strings, so codes the one-view parser adds to the catalogue can be placed before they arrive. */
  codes: readonly string[];
}

/** Explain messages against one configuration; replays and duplicates are judged in call order. */
export class Explainer {
  readonly #config: LoadedConfig;
  readonly #keys: KeyService | undefined;
  readonly #once: DryRunOnceStore;
  #claimsKey: Promise<{ privateKey: CryptoKey; jwk: JWK }> | undefined;

  constructor(opts: ExplainerOptions) {
    this.#config = opts.config;
    this.#keys = opts.keys;
    this.#once = new DryRunOnceStore(opts.remembered);
  }

  explain(input: ExplainInput): Promise<Explanation> {
    return 'sealed' in input ? this.#sealed(input) : this.#claims(input);
  }

  async #sealed(input: SealedInput): Promise<Explanation> {
    const receivedAt = input.receivedAt ?? Date.now();
    const ctx = this.#context(receivedAt);
    const walk = new Walk('sealed', receivedAt, this.#config);
    let record: PipelineRecord = {
      v: RECORD_VERSION,
      traceId: `explain-${randomUUID()}`,
      receivedAt,
      source: 'cli',
      ...(input.credential ? { credential: input.credential } : {}),
      sealed: { inline: input.sealed.trim() },
    };

    const authenticated = await walk.authenticate(record, ctx, input.credential ?? '');
    if (!authenticated) return walk.finish();
    record = authenticated;

    const authorised = await walk.authorise(record, ctx);
    if (!authorised) return walk.finish();
    record = authorised;

    if (!this.#keys) {
      walk.skip('decrypt', 'no keystore given: the sealed message cannot be decrypted');
      walk.skip('verify', 'needs the decrypted message');
      return walk.finish({ incomplete: true });
    }
    const kid = record.decision?.kid;
    const decrypted = await walk.coded('decrypt', DECRYPT_CHECKS, () => decryptRecord(record, ctx), {
      decrypt: `one answer whatever failed (RFC 7516 §11.5): the JWE was altered, encrypted to another key, or the key service does not hold ${kid} (check with config validate --keystore)`,
    });
    if (!decrypted) return walk.finish();
    const verified = await walk.coded('verify', VERIFY_CHECKS, () => verifyRecord(decrypted, ctx));
    if (!verified) return walk.finish();
    walk.deliverable(verified);
    return walk.finish();
  }

  async #claims(input: ClaimsInput): Promise<Explanation> {
    const receivedAt = input.receivedAt ?? Date.now();
    const walk = new Walk('claims', receivedAt, this.#config);
    const { token, config } = await this.#claimsCredential(input.claims, receivedAt);
    const routing: ItkRouting = { ...input.routing, id: input.routing.id ?? randomUUID() };
    // Only the signature is the stand-in's; every other check runs against the real configuration.
    const ctx: StageContext = { config, ports: dryRunPorts({ once: this.#once, receivedAt }) };
    const record: PipelineRecord = {
      v: RECORD_VERSION,
      traceId: `explain-${randomUUID()}`,
      receivedAt,
      source: 'cli',
      credential: token,
      // The replay check digests the submission; without a message, the claims stand for it.
      sealed: { inline: `claims:${token}` },
    };
    const authenticated = await walk.authenticate(record, ctx, token, {
      skipped: ['structure', 'header', 'key', 'signature'],
      note: 'claims mode: no credential to check',
    });
    if (!authenticated?.principal) return walk.finish();

    const recipient = this.#config.recipientsByOds.get(routing.to);
    const kid = input.kid ?? recipient?.keys[0]?.kid ?? 'none';
    walk.policy(authenticated.principal, routing, kid, receivedAt, { envelopeSkipped: true });
    if (walk.failed) return walk.finish();
    walk.skip('decrypt', 'claims mode: no sealed message');
    walk.skip('verify', verifyPreview(this.#config, walk.decision?.ruleId));
    return walk.finish({ incomplete: true });
  }

  #context(receivedAt: number): StageContext {
    return {
      config: this.#config,
      ports: dryRunPorts({ ...(this.#keys ? { keys: this.#keys } : {}), once: this.#once, receivedAt }),
    };
  }

  /**
   * A credential with the intended claims, signed by a throw-away key that stands in for its
   * issuer's in a copy of the configuration: the one thing claims mode cannot check is the
   * signature, so only the issuer's keys differ.
   */
  async #claimsCredential(
    claims: Record<string, unknown>,
    receivedAt: number,
  ): Promise<{ token: string; config: LoadedConfig }> {
    this.#claimsKey ??= generateKeyPair('ES256', { extractable: true }).then(
      async ({ privateKey, publicKey }) => ({
        privateKey,
        jwk: await exportJWK(publicKey),
      }),
    );
    const { privateKey, jwk } = await this.#claimsKey;
    const kid = 'explain-claims';
    const iat = Math.floor(receivedAt / 1000);
    const payload = { iat, exp: iat + 300, jti: randomUUID(), ...claims };
    const token = await new SignJWT(payload)
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
      .sign(privateKey);
    const standIn: PublicJwk = {
      kty: 'EC',
      crv: 'P-256',
      x: jwk.x as string,
      y: jwk.y as string,
      kid,
      alg: 'ES256',
    };
    const doc = this.#config.doc;
    const issuers = doc.issuers.map((i) => (i.issuer === claims.iss ? { ...i, keys: [standIn] } : i));
    return { token, config: loadConfig({ ...doc, issuers }) };
  }
}

/** Explain one message (a fresh {@link Explainer}: no earlier message is remembered). */
export function explain(input: ExplainInput, opts: ExplainerOptions): Promise<Explanation> {
  return new Explainer(opts).explain(input);
}

/** The path of one message through the stages, built as the walk goes. */
class Walk {
  readonly #stages: ExplainedStage[] = [];
  readonly #mode: Explanation['mode'];
  readonly #receivedAt: number;
  readonly #config: LoadedConfig;
  #failure: { stage: StageName; error: RejectionError } | undefined;
  #error: { stage: StageName; code: string; detail: string } | undefined;
  #toPass: string[] = [];
  #policy: PolicyExplanation | undefined;
  decision: { ruleId: string; delegationId?: string } | undefined;

  constructor(mode: Explanation['mode'], receivedAt: number, config: LoadedConfig) {
    this.#mode = mode;
    this.#receivedAt = receivedAt;
    this.#config = config;
  }

  get failed(): boolean {
    return this.#failure !== undefined || this.#error !== undefined;
  }

  /** The credential checks (told by the verifier as they pass), then the stage's replay check. */
  async authenticate(
    record: PipelineRecord,
    ctx: StageContext,
    credential: string,
    claimsMode?: { skipped: CredentialCheck[]; note: string },
  ): Promise<PipelineRecord | undefined> {
    const passed = new Set<string>();
    const ids = [...CREDENTIAL_CHECKS, 'replay'] as const;
    const text = (id: (typeof ids)[number]) =>
      id === 'replay'
        ? '(iss, organisation, jti) not used before with another submission'
        : CREDENTIAL_TEXT[id];
    let result: PipelineRecord | undefined;
    let error: unknown;
    try {
      await verifyCredential(credential, ctx.config, record.receivedAt, (c) => passed.add(c));
      result = await authenticateRecord({ record, inboundMessageId: record.traceId }, ctx);
      passed.add('replay');
    } catch (e) {
      error = e;
    }
    const checks = this.#ordered(
      ids.map((id) => ({ id, text: text(id) })),
      passed,
      error,
    );
    const failed = checks.find((c) => c.status === 'failed');
    const issuer = this.#config.issuersByIss.get(unverifiedIss(credential) ?? '');
    if (issuer && failed?.id === 'organisation') {
      failed.note = `issuer ${issuer.id} reads the organisation from claim "${issuer.organisationClaim}"`;
    }
    if (issuer && failed?.id === 'scope') {
      failed.note = `issuer ${issuer.id} may speak for ${issuer.organisations.join(', ')}`;
    }
    if (claimsMode) {
      for (const check of checks) {
        if (claimsMode.skipped.includes(check.id as CredentialCheck) && check.status === 'passed') {
          check.status = 'skipped';
          check.note = claimsMode.note;
        }
      }
    }
    this.#push('authenticate', checks, error);
    return error ? undefined : result;
  }

  /** Envelope parsing, the policy's checks, then the real authorise stage for the record. */
  async authorise(record: PipelineRecord, ctx: StageContext): Promise<PipelineRecord | undefined> {
    const principal = record.principal;
    const sealed = record.sealed;
    if (!principal || !sealed || !('inline' in sealed)) return undefined;
    let parsed: ReturnType<typeof parseSealed>;
    try {
      parsed = parseSealed(sealed.inline, this.#config.doc.limits);
    } catch (error) {
      const envelope = this.#ordered([{ id: 'envelope', text: ENVELOPE_TEXT }], new Set(), error);
      const rest = POLICY_CHECKS.map((id) => ({
        id,
        description: POLICY_TEXT[id],
        status: 'not-reached' as const,
      }));
      this.#push('authorise', [...envelope, ...rest], error);
      return undefined;
    }
    this.policy(principal, parsed.routing, parsed.kid, record.receivedAt, { envelopeSkipped: false });
    if (this.failed) return undefined;
    try {
      return await authoriseRecord(record, ctx);
    } catch (error) {
      // The policy just allowed this message, so the stage cannot disagree; if it ever does, say so.
      this.#fail('authorise', error);
      return undefined;
    }
  }

  /** The policy's checks for a principal and routing header, with the rule or the deny-by-default. */
  policy(
    principal: NonNullable<PipelineRecord['principal']>,
    routing: ItkRouting,
    kid: string,
    receivedAt: number,
    opts: { envelopeSkipped: boolean },
  ): void {
    // The envelope was parsed before (sealed mode) or there is none (claims mode: marked skipped).
    const passed = new Set<string>(['envelope']);
    let error: unknown;
    try {
      const decision = decide({ principal, routing, kid, receivedAt }, this.#config, (c) => passed.add(c));
      this.decision = decision;
      this.#policy = {
        ruleId: decision.ruleId,
        ...(decision.delegationId ? { delegationId: decision.delegationId } : {}),
        denyByDefault: false,
        candidates: [],
      };
    } catch (e) {
      error = e;
    }
    const checks = this.#ordered(
      [
        { id: 'envelope', text: ENVELOPE_TEXT },
        ...POLICY_CHECKS.map((id) => ({ id, text: POLICY_TEXT[id] })),
      ],
      passed,
      error,
    );
    if (opts.envelopeSkipped) {
      const envelope = checks[0] as ExplainedCheck;
      envelope.status = 'skipped';
      envelope.note = 'claims mode: no sealed message';
    }
    const failed = checks.find((c) => c.status === 'failed');
    if (failed?.id === 'rule') {
      const candidates = this.#config.doc.rules
        .filter((r) => r.sender.ods === routing.from)
        .map((r) => ({ ruleId: r.id, mismatches: describeMismatches(r, principal, routing) }));
      this.#policy = { denyByDefault: true, candidates };
      failed.note =
        candidates.length === 0
          ? `deny by default: no rule names sender ${routing.from}`
          : `deny by default: ${candidates.map((c) => `rule ${c.ruleId}: ${c.mismatches.join('; ')}`).join(' | ')}`;
    }
    if (failed?.id === 'delegation')
      failed.note = describeGrants(this.#config, principal, routing, receivedAt);
    if (failed?.id === 'recipient-known') {
      failed.note = `served here: ${[...this.#config.recipientsByOds.keys()].join(', ')}`;
    }
    if (failed?.id === 'recipient-key') {
      const keys = this.#config.recipientsByOds.get(routing.to)?.keys.map((k) => k.kid) ?? [];
      failed.note = `keys of ${routing.to}: ${keys.join(', ')}`;
    }
    if (failed?.id === 'routing-sender') {
      failed.note = `the credential speaks for ${principal.organisation}; itk.from is ${routing.from}`;
    }
    this.#push('authorise', checks, error);
  }

  /** A stage run whole; a failure is placed at the check its code belongs to. */
  async coded(
    stage: StageName,
    list: readonly CodedCheck[],
    run: () => Promise<PipelineRecord>,
    notes: Readonly<Record<string, string>> = {},
  ): Promise<PipelineRecord | undefined> {
    try {
      const record = await run();
      this.#push(
        stage,
        list.map((c) => ({ id: c.id, description: c.text, status: 'passed' })),
        undefined,
      );
      return record;
    } catch (error) {
      const code = error instanceof RejectionError ? error.code : undefined;
      // A code no check lists still gets a failed row, after the listed ones, none claimed passed.
      const known = code ? list.findIndex((c) => c.codes.includes(code)) : -1;
      const rows =
        code && known < 0
          ? [...list, { id: 'unlisted', text: `a ${stage} check explain does not list`, codes: [code] }]
          : list;
      const at = code && known < 0 ? rows.length - 1 : known;
      const checks: ExplainedCheck[] = rows.map((c, i) => ({
        id: c.id,
        description: c.text,
        status:
          at < 0 || (known < 0 && i < at)
            ? 'not-reached'
            : i < at
              ? 'passed'
              : i === at
                ? 'failed'
                : 'not-reached',
      }));
      const failed = checks[at];
      if (failed) {
        Object.assign(failed, failureOf(error as RejectionError));
        const note = notes[failed.id];
        if (note) failed.note = note;
      }
      this.#push(stage, checks, error);
      return undefined;
    }
  }

  skip(stage: StageName, note: string): void {
    this.#stages.push({ stage, status: 'skipped', checks: [], note });
  }

  deliverable(record: PipelineRecord): void {
    const message = record.message;
    const recipient = message ? this.#config.recipientsByOds.get(message.recipient) : undefined;
    const where = recipient ? describeTarget(recipient.target) : 'its target';
    const ack = message?.infAckRequested ? '; an ITK008M 20013 would go to the sender' : '';
    this.skip(
      'deliver',
      `explain never delivers: the ${message?.format === 'json' ? 'JSON' : 'XML'} Bundle would go to ${where}${ack}`,
    );
  }

  /** `incomplete`: decrypt and verify could not run, so passing means only "authorised". */
  finish(opts: { incomplete?: boolean } = {}): Explanation {
    const stagesRun = new Set(this.#stages.map((s) => s.stage));
    for (const stage of ['authenticate', 'authorise', 'decrypt', 'verify', 'deliver'] as const) {
      if (!stagesRun.has(stage)) this.#stages.push({ stage, status: 'not-reached', checks: [] });
    }
    const base = {
      mode: this.#mode,
      receivedAt: new Date(this.#receivedAt).toISOString(),
      stages: this.#stages,
      ...(this.#policy ? { policy: this.#policy } : {}),
    };
    if (this.#failure) {
      const { stage, error } = this.#failure;
      return {
        ...base,
        outcome: 'reject',
        stage,
        code: error.code,
        itk3Code: error.itk3Code,
        detail: error.message,
        toPass: this.#toPass,
      };
    }
    if (this.#error) {
      return { ...base, outcome: 'error', ...this.#error, toPass: [] };
    }
    return { ...base, outcome: opts.incomplete ? 'authorised' : 'deliver', toPass: [] };
  }

  /** Checks in order: those told as passed, then the failed one, then the rest not reached. */
  #ordered(
    list: readonly { id: string; text: string }[],
    passed: Set<string>,
    error: unknown,
  ): ExplainedCheck[] {
    let failedOne = false;
    return list.map(({ id, text }) => {
      if (passed.has(id)) return { id, description: text, status: 'passed' };
      if (error && !failedOne) {
        failedOne = true;
        return {
          id,
          description: text,
          status: 'failed',
          ...(error instanceof RejectionError ? failureOf(error) : {}),
        };
      }
      return { id, description: text, status: error ? 'not-reached' : 'passed' };
    });
  }

  #push(stage: StageName, checks: ExplainedCheck[], error: unknown): void {
    const status: CheckStatus = error ? 'failed' : 'passed';
    this.#stages.push({ stage, status, checks });
    if (error) this.#fail(stage, error, checks);
  }

  #fail(stage: StageName, error: unknown, checks?: ExplainedCheck[]): void {
    if (!(error instanceof RejectionError)) {
      const code = (error as { code?: unknown })?.code;
      this.#error = {
        stage,
        code: typeof code === 'string' ? code : 'UNEXPECTED',
        detail: error instanceof Error ? error.message : 'unexpected failure',
      };
      return;
    }
    this.#failure = { stage, error };
    const note = checks?.find((c) => c.status === 'failed')?.note;
    this.#toPass = [describeCode(error.code).toPass, ...(note ? [note] : [])];
  }
}

/**
 * The `iss` of a credential, unverified: only to name its issuer's configuration in an
 * explanation, never to decide anything.
 */
function unverifiedIss(token: string): string | undefined {
  try {
    const claims = JSON.parse(
      Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'),
    ) as unknown;
    const iss = (claims as { iss?: unknown } | null)?.iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

const ENVELOPE_TEXT =
  'compact JWE within maxSealedBytes, header {alg RSA-OAEP-256, enc A256GCM, kid, cty JOSE, itk}';

function failureOf(error: RejectionError): Pick<ExplainedCheck, 'code' | 'itk3Code' | 'detail'> {
  return { code: error.code, itk3Code: ERROR_CATALOGUE[error.code], detail: error.message };
}

function describeMismatches(
  rule: LoadedConfig['doc']['rules'][number],
  principal: NonNullable<PipelineRecord['principal']>,
  routing: ItkRouting,
): string[] {
  return ruleMismatches(rule, principal, routing).map((m) => {
    switch (m) {
      case 'sender':
        return `sender is ${rule.sender.ods}`;
      case 'event':
        return `event is ${rule.event}, not ${routing.event}`;
      case 'recipient':
        return `recipients are ${rule.recipients.join(', ')}, not ${routing.to}`;
      case 'client':
        return `clients are ${(rule.sender.clients ?? []).map((c) => `${c.issuer}/${c.sub}`).join(', ')}`;
    }
    return m;
  });
}

function describeGrants(
  config: LoadedConfig,
  principal: NonNullable<PipelineRecord['principal']>,
  routing: ItkRouting,
  receivedAt: number,
): string {
  const lines = principal.actors.map((actor, depth) => {
    const grants = config.doc.delegations.filter((g) => g.actor === actor);
    if (grants.length === 0) return `actor at depth ${depth} (${actor}) holds no grant at all`;
    return grants
      .map((g) => {
        const gaps = [
          ...(g.issuers.includes(principal.issuer) ? [] : [`issuers ${g.issuers.join(', ')}`]),
          ...(g.onBehalfOf.includes(routing.from) ? [] : [`on behalf of ${g.onBehalfOf.join(', ')}`]),
          ...(g.events.includes(routing.event) ? [] : [`events ${g.events.join(', ')}`]),
          ...(grantExpiry(g) > receivedAt ? [] : [`expired ${g.expires}`]),
        ];
        return `grant ${g.id} (${actor}): ${gaps.length === 0 ? 'covers this message' : gaps.join('; ')}`;
      })
      .join(' | ');
  });
  return lines.join(' | ');
}

function describeTarget(target: LoadedConfig['doc']['recipients'][number]['target']): string {
  switch (target.type) {
    case 'folder':
      return `folder ${target.path}`;
    case 's3':
      return `s3://${target.bucket}/${target.prefix}`;
    case 'sqs':
      return `queue ${target.queueUrl}`;
    case 'mesh':
      return `MESH mailbox ${target.mailbox}${target.workflowId ? ` (workflow ${target.workflowId})` : ''}`;
  }
}

/** In claims mode, what the verify stage will require of the message under the matched rule. */
function verifyPreview(config: LoadedConfig, ruleId: string | undefined): string {
  const rule = config.doc.rules.find((r) => r.id === ruleId);
  const parts = ['claims mode: no sealed message'];
  if (!rule) return parts[0] as string;
  const wants = [
    ...(rule.messageDefinition ? [`MessageDefinition ${rule.messageDefinition.join(' or ')}`] : []),
    ...(rule.recipientType ? [`RecipientType ${rule.recipientType.join(' or ')}`] : []),
    ...(rule.acks?.inf !== undefined ? [`InfAckRequested ${rule.acks.inf}`] : []),
    ...(rule.acks?.bus !== undefined ? [`BusAckRequested ${rule.acks.bus}`] : []),
    ...(rule.maxBytes !== undefined ? [`at most ${rule.maxBytes} bytes`] : []),
    ...(rule.receiverAllowed ? [] : ['no MessageHeader.receiver']),
  ];
  return wants.length > 0
    ? `${parts[0]}; rule ${rule.id} will require ${wants.join(', ')}`
    : (parts[0] as string);
}
