/**
 * The pipeline configuration document: issuers, senders and their signing keys, recipients with
 * their delivery targets and key ids, policy rules, delegation grants and limits.
 *
 * Parsed once (zod) into a frozen typed object. Validation reports every problem at once, including
 * cross-references (a rule naming an unknown sender, a recipient naming an unknown key id, …).
 * `docs/config.schema.json` is generated from this schema (`itk3 config schema`).
 */
import * as z from 'zod';
import { SCOPE_ENTRY_PATTERN, scopeEntryProblem } from './scope.js';

const ods = z.string().regex(/^[A-Z0-9]{3,10}$/, 'an ODS code: 3–10 upper-case letters or digits');
const kid = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'a key id: 1–64 of A-Z a-z 0-9 . _ -');
const eventCode = z.string().regex(/^ITK\d{3}[A-Z]$/, 'an ITK3 event code such as ITK007C');
const issuerId = z.string().regex(/^[a-z0-9-]{1,64}$/, 'an issuer id: 1–64 of a-z 0-9 -');

/** One entry of an issuer's scope: an exact ODS code or a prefix pattern such as `FA*`. */
const scopeEntry = z
  .string()
  .regex(SCOPE_ENTRY_PATTERN, { error: (issue) => scopeEntryProblem(String(issue.input)) });

/**
 * A client: a token subject as one issuer names it. A subject alone is refused: the same `sub`
 * minted by another trusted issuer is another party.
 */
export const ClientSchema = z
  .object(
    {
      /** Id of the configured issuer whose credentials carry this subject. */
      issuer: issuerId,
      /** The token `sub`. */
      sub: z.string().min(1).max(256),
    },
    {
      error: (issue) =>
        typeof issue.input === 'string'
          ? 'a client is {"issuer": <issuer id>, "sub": <token subject>}: a bare subject is not tied to an issuer'
          : undefined,
    },
  )
  .strict();
export type ClientRef = z.infer<typeof ClientSchema>;

/** Public JWK as published by a partner: no private members. */
export const PublicJwkSchema = z
  .object({
    kty: z.enum(['RSA', 'EC']),
    kid,
    alg: z.enum(['RS512', 'PS256', 'ES256']),
    use: z.literal('sig').optional(),
    n: z.string().optional(),
    e: z.string().optional(),
    crv: z.literal('P-256').optional(),
    x: z.string().optional(),
    y: z.string().optional(),
  })
  .strict()
  .superRefine((jwk, ctx) => {
    if (jwk.kty === 'RSA' && (!jwk.n || !jwk.e || jwk.alg === 'ES256')) {
      ctx.addIssue({ code: 'custom', message: 'an RSA key needs n and e and an RS512 or PS256 alg' });
    }
    if (jwk.kty === 'EC' && (!jwk.x || !jwk.y || jwk.crv !== 'P-256' || jwk.alg !== 'ES256')) {
      ctx.addIssue({ code: 'custom', message: 'an EC key needs crv P-256, x, y and alg ES256' });
    }
  });
export type PublicJwk = z.infer<typeof PublicJwkSchema>;

export const DeliveryTargetSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('folder'), path: z.string().min(1) }).strict(),
  z.object({ type: z.literal('s3'), bucket: z.string().min(3), prefix: z.string().default('') }).strict(),
  z.object({ type: z.literal('sqs'), queueUrl: z.string().url() }).strict(),
]);

export const IssuerSchema = z
  .object({
    /** Our name for this trust relationship; appears in principals and audit. */
    id: issuerId,
    /** The exact `iss` value. */
    issuer: z.string().min(1),
    /**
     * The organisations this issuer may speak for: exact ODS codes and prefix patterns (`FA*`).
     * A credential for any other organisation is refused at authenticate. There is no "any".
     */
    organisations: z
      .array(scopeEntry, {
        error: (issue) =>
          issue.input === undefined
            ? 'required: list the ODS codes or prefix patterns (such as "FA*") this issuer may speak for'
            : undefined,
      })
      .min(1, 'an issuer must speak for at least one organisation')
      .meta({
        description:
          'Organisations this issuer may speak for: exact ODS codes and prefix patterns such as "FA*". No "any".',
      }),
    /** Claim holding the sending organisation's ODS code (dotted path allowed). */
    organisationClaim: z.string().min(1).default('ods'),
    /** Claim holding roles (array of strings), if any. */
    rolesClaim: z.string().min(1).optional(),
    /** NHS signed-JWT rule: `iss` must equal `sub`. Off for federated identity providers. */
    requireIssEqualsSub: z.boolean().default(false),
    keys: z.array(PublicJwkSchema).min(1),
  })
  .strict();

export const SenderSchema = z
  .object({
    ods,
    name: z.string().optional(),
    /** Token subjects allowed to send for this organisation, each bound to the issuer that names it. */
    clients: z.array(ClientSchema).min(1),
    /** MESH mailbox expected in MessageHeader.source.endpoint, if checked. */
    meshMailbox: z.string().optional(),
    /** Keys that sign this organisation's messages (inner JWS). */
    signingKeys: z.array(PublicJwkSchema).min(1),
    /** Where ITK3 responses for this sender go. */
    responseTarget: DeliveryTargetSchema,
  })
  .strict();

/**
 * KMS key spec of a recipient key, which fixes its JWE `alg`: RSA specs are `ENCRYPT_DECRYPT` keys
 * for `RSA-OAEP-256`; `ECC_NIST_P256` is a `KEY_AGREEMENT` key for `ECDH-ES+A256KW`.
 */
export const RECIPIENT_KEY_SPECS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256'] as const;
export type RecipientKeySpec = (typeof RECIPIENT_KEY_SPECS)[number];

export const RecipientKeySchema = z
  .object({
    kid,
    /** KMS key id, ARN or alias (AWS mode). Locally the keystore holds the key under `kid`. */
    kmsKeyId: z.string().optional(),
    /**
     * The key's KMS spec (created keys are made with it; a referenced key must have it).
     * `ECC_NIST_P256` means senders use `ECDH-ES+A256KW`; every RSA spec `RSA-OAEP-256`.
     * @default 'RSA_4096'
     */
    keySpec: z.enum(RECIPIENT_KEY_SPECS).optional(),
  })
  .strict();

export const RecipientSchema = z
  .object({
    ods,
    name: z.string().optional(),
    /** Decryption keys senders may encrypt to; several live at once during rotation. */
    keys: z.array(RecipientKeySchema).min(1),
    target: DeliveryTargetSchema,
  })
  .strict();

export const PolicyRuleSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
    sender: z
      .object({
        ods,
        /** Restrict to these (issuer, subject) clients; default: any client registered for the sender. */
        clients: z.array(ClientSchema).optional(),
      })
      .strict(),
    event: eventCode,
    /** Allowed MessageDefinition names (last URL segment); both `…-1` and `…-Instance-1` match. */
    messageDefinition: z.array(z.string()).optional(),
    recipientType: z.array(z.enum(['FA', 'FI'])).optional(),
    /** Required ack flags: 10002 / 10003 when the message disagrees. */
    acks: z.object({ inf: z.boolean().optional(), bus: z.boolean().optional() }).strict().optional(),
    /** Whether MessageHeader.receiver may be present (some use cases forbid it). Default true. */
    receiverAllowed: z.boolean().default(true),
    recipients: z.array(ods).min(1),
    maxBytes: z.number().int().positive().optional(),
  })
  .strict();

export const DelegationGrantSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
    /** Token `act.sub` of the acting party. */
    actor: z.string().min(1),
    /** Issuer ids whose credentials may carry this actor; an actor vouched for by any other gets nothing. */
    issuers: z.array(issuerId).min(1),
    /** Organisations it may act for (the token's organisation). */
    onBehalfOf: z.array(ods).min(1),
    events: z.array(eventCode).min(1),
    /** ISO date or date-time; the grant is void at and after this instant. */
    expires: z.iso.date().or(z.iso.datetime({ offset: true })),
  })
  .strict();

export const LimitsSchema = z
  .object({
    maxTokenBytes: z
      .number()
      .int()
      .positive()
      .default(8 * 1024),
    /** Cap on the compact JWE before parsing: ≈ 1.78 × 5 MiB + headers (PERFORMANCE.md §3). */
    maxSealedBytes: z.number().int().positive().default(9_437_184),
    /** ITK3 recommended maximum: above it, 20015. */
    maxBundleBytes: z.number().int().positive().default(5_242_880),
    /** Artefacts larger than this go to the blob store (claim check). */
    claimCheckBytes: z
      .number()
      .int()
      .positive()
      .default(192 * 1024),
    clockSkewSeconds: z.number().int().min(0).max(120).default(30),
    maxTokenLifetimeSeconds: z.number().int().positive().max(3600).default(300),
    maxDelegationDepth: z.number().int().min(1).max(5).default(2),
    /** How long duplicate message/document ids are remembered. */
    dedupeDays: z.number().int().positive().default(30),
  })
  .strict();

export const ConfigSchema = z
  .object({
    $schema: z.string().optional(),
    /** The `aud` every credential must carry: this deployment's ingestion URL. */
    audience: z.string().min(1),
    /** Name used as the responder in ITK3 responses. */
    gatewayOds: ods,
    responseSigning: z.object({ kid, kmsKeyId: z.string().optional() }).strict(),
    /** Where responses go when the sender was not authenticated. */
    unauthenticatedResponseTarget: DeliveryTargetSchema,
    limits: LimitsSchema.default(LimitsSchema.parse({})),
    issuers: z.array(IssuerSchema).min(1),
    senders: z.array(SenderSchema),
    recipients: z.array(RecipientSchema).min(1),
    rules: z.array(PolicyRuleSchema),
    delegations: z.array(DelegationGrantSchema).default([]),
  })
  .strict();

export type PipelineConfigInput = z.input<typeof ConfigSchema>;
export type PipelineConfig = z.output<typeof ConfigSchema>;
export type IssuerConfig = PipelineConfig['issuers'][number];
export type SenderConfig = PipelineConfig['senders'][number];
export type RecipientConfig = PipelineConfig['recipients'][number];
export type PolicyRule = PipelineConfig['rules'][number];
export type DelegationGrant = PipelineConfig['delegations'][number];
export type Limits = PipelineConfig['limits'];
