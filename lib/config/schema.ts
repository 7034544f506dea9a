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
const meshMailboxId = z
  .string()
  .regex(/^[A-Z0-9]{3,20}$/, 'a MESH mailbox id: 3–20 upper-case letters or digits, such as X26ABC1');
const meshWorkflowId = z
  .string()
  .regex(
    /^[A-Z0-9_]{1,64}$/,
    'a MESH workflow id: upper-case letters, digits and _, such as GPFED_CONSULT_REPORT',
  );

/**
 * A secret given by reference, never inline: the name of an environment variable holding it, or a
 * file whose contents are the secret (trailing newline removed). Resolved when a MESH connection is
 * made; the value is never printed.
 */
const SecretRefSchema = z.union([
  z
    .object({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name') })
    .strict(),
  z.object({ file: z.string().min(1) }).strict(),
]);
export type SecretRef = z.infer<typeof SecretRefSchema>;

/** One entry of an issuer's scope: an exact ODS code or a prefix pattern such as `FA*`. */
const scopeEntry = z
  .string()
  .regex(SCOPE_ENTRY_PATTERN, { error: (issue) => scopeEntryProblem(String(issue.input)) });

/**
 * A client: a token subject as one issuer names it. A subject alone is refused: the same `sub`
 * minted by another trusted issuer is another party.
 */
const ClientSchema = z
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

const DeliveryTargetSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('folder'), path: z.string().min(1) }).strict(),
  z.object({ type: z.literal('s3'), bucket: z.string().min(3), prefix: z.string().default('') }).strict(),
  z.object({ type: z.literal('sqs'), queueUrl: z.string().url() }).strict(),
  /**
   * A MESH mailbox: the bytes are sent from the gateway's mailbox with this workflow id (default:
   * the workflow the message arrived with over MESH, else the event's first workflow, ITK3.md §3).
   */
  z
    .object({ type: z.literal('mesh'), mailbox: meshMailboxId, workflowId: meshWorkflowId.optional() })
    .strict(),
]);

const IssuerSchema = z
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

const SenderSchema = z
  .object({
    ods,
    name: z.string().optional(),
    /**
     * Token subjects allowed to send for this organisation, each bound to the issuer that names it.
     * May be empty only for an organisation that sends through MESH alone.
     */
    clients: z.array(ClientSchema),
    /** MESH mailbox expected in MessageHeader.source.endpoint of sealed messages, if checked. */
    meshMailbox: z.string().optional(),
    /**
     * This organisation as a MESH sender: the mailboxes it owns (a message from one of them is this
     * organisation's) and whether its ITK3 responses through MESH are signed (a JWS, as over HTTPS)
     * or the plain ITK008M Bundle MESH senders expect (the default).
     */
    mesh: z
      .object({
        mailboxes: z.array(meshMailboxId).min(1),
        signedResponses: z.boolean().default(false),
      })
      .strict()
      .optional(),
    /** Keys that sign this organisation's messages (inner JWS). Empty only for plain-ITK3 MESH senders. */
    signingKeys: z.array(PublicJwkSchema),
    /** Where ITK3 responses for this sender go. */
    responseTarget: DeliveryTargetSchema,
  })
  .strict()
  .superRefine((sender, ctx) => {
    if (sender.clients.length === 0 && !sender.mesh) {
      ctx.addIssue({
        code: 'custom',
        path: ['clients'],
        message:
          'a sender needs at least one client, or MESH mailboxes (mesh.mailboxes) if it sends only through MESH',
      });
    }
    if (sender.signingKeys.length === 0 && sender.clients.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['signingKeys'],
        message: 'a sender with clients (sealed messages over HTTPS or SQS) needs at least one signing key',
      });
    }
  });

/**
 * KMS key spec of a recipient key, which fixes its JWE `alg`: RSA specs are `ENCRYPT_DECRYPT` keys
 * for `RSA-OAEP-256`; `ECC_NIST_P256` is a `KEY_AGREEMENT` key for `ECDH-ES+A256KW`.
 */
const RECIPIENT_KEY_SPECS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256'] as const;

const RecipientKeySchema = z
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

const RecipientSchema = z
  .object({
    ods,
    name: z.string().optional(),
    /** Decryption keys senders may encrypt to; several live at once during rotation. */
    keys: z.array(RecipientKeySchema).min(1),
    target: DeliveryTargetSchema,
  })
  .strict();

const PolicyRuleSchema = z
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
    /**
     * A MessageHeader `receiver` that does not resolve to an ODS-coded Organization in the Bundle,
     * or a `focus` that resolves to no entry: `refuse` (20006 REFERENCE_UNRESOLVED, the default) or
     * `allow` (accepted with a warning). `sender` must always resolve.
     */
    unresolvedReferences: z.enum(['refuse', 'allow']).default('refuse'),
    /**
     * Transports the rule accepts: `https` (the HTTP front door and direct SQS, with a credential
     * and a sealed envelope) and `mesh` (a configured MESH mailbox). Default `["https"]`.
     */
    transports: z
      .array(z.enum(['https', 'mesh']))
      .min(1)
      .default(['https']),
    /**
     * For MESH: `optional` accepts plain ITK3 (the Bundle as the body) and sealed messages (the
     * JWE as the body, whose inner JWS still proves the organisation); `required` accepts only sealed.
     */
    meshSealed: z.enum(['optional', 'required']).default('optional'),
  })
  .strict();

const DelegationGrantSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
    /** Token `act.sub` of the acting party. */
    actor: z.string().min(1),
    /** Issuer ids whose credentials may carry this actor; an actor vouched for by any other gets nothing. */
    issuers: z.array(issuerId).default([]),
    /**
     * MESH mailboxes the actor runs for the organisations below (a third party's mailbox sending for
     * a practice): a MESH message from one of them may speak for those organisations and events.
     */
    meshMailboxes: z.array(meshMailboxId).min(1).optional(),
    /** Organisations it may act for (the token's organisation). */
    onBehalfOf: z.array(ods).min(1),
    events: z.array(eventCode).min(1),
    /** ISO date or date-time; the grant is void at and after this instant. */
    expires: z.iso.date().or(z.iso.datetime({ offset: true })),
  })
  .strict()
  .refine((grant) => grant.issuers.length > 0 || grant.meshMailboxes !== undefined, {
    message:
      'a grant names the issuers that vouch for the actor, or the MESH mailboxes it runs (meshMailboxes)',
    path: ['issuers'],
  });

/** A gateway mailbox: where senders send to reach the recipients it lists. */
const MeshGatewayMailboxSchema = z
  .object({
    mailbox: meshMailboxId,
    /**
     * The mailbox password, by reference: required by the embedded runtime (`itk3 serve --mesh`,
     * `itk3 mesh poll`). On the deployed stack it is not read: the mailbox's Secrets Manager secret
     * holds the password, shared key and certificates (docs/DEPLOY.md, "MESH poller").
     */
    password: SecretRefSchema.optional(),
    /** Recipients this mailbox receives for: a message whose `Mex-To` is this mailbox is for one of them. */
    recipients: z.array(ods).min(1),
  })
  .strict();

/** Extra event ↔ workflow pairs, beside the built-in table of ITK3.md §3. */
const MeshWorkflowSchema = z
  .object({
    event: eventCode,
    /** Workflow ids a sender may use for this event. */
    send: z.array(meshWorkflowId).min(1),
    /** Workflow id of the ITK008M responses to it (default: the send workflow + `_ACK`). */
    ack: meshWorkflowId.optional(),
  })
  .strict();

/** The gateway's MESH connection (docs/MESH.md): mailboxes, URL, credentials by reference, TLS files. */
const MeshGatewaySchema = z
  .object({
    /** `https://host[:port]` (http only for loopback, e.g. the sandbox). */
    url: z.url({ protocol: /^https?$/ }),
    /**
     * The environment-wide MESH shared secret, by reference: required by the embedded runtime; on
     * the deployed stack each mailbox's Secrets Manager secret holds it instead.
     */
    sharedKey: SecretRefSchema.optional(),
    /**
     * Client certificate, key and CA bundle as PEM file paths; required for any non-loopback URL in
     * the embedded runtime (on the deployed stack: in each mailbox's secret).
     */
    tls: z
      .object({ cert: z.string().min(1), key: z.string().min(1), ca: z.string().min(1).optional() })
      .strict()
      .optional(),
    mailboxes: z.array(MeshGatewayMailboxSchema).min(1),
    /** The gateway mailbox that sends deliveries to `mesh` targets (default: the first mailbox). */
    sendFrom: meshMailboxId.optional(),
    /** `itk3 serve --mesh`: seconds between polls of each mailbox. */
    pollIntervalSeconds: z.number().int().min(1).max(3600).default(60),
    /** Messages per mailbox per pass. */
    maxMessagesPerPass: z.number().int().positive().max(10_000).default(100),
    /**
     * Key id that signs the poller's attestation of each MESH message it enqueues (default: the
     * response-signing key). Only a holder of this key can put a MESH message on the inbound queue.
     */
    attestationKid: kid.optional(),
    workflows: z.array(MeshWorkflowSchema).default([]),
  })
  .strict();

const LimitsSchema = z
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
    /** MESH transport: the gateway's mailboxes and connection. Absent: no MESH. */
    mesh: MeshGatewaySchema.optional(),
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
