import { Arn, ArnFormat, type RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { wrappedSigningKeyContext } from '../../lib/adapters/aws/deployment-names.js';
import type { PipelineConfig } from '../../lib/config/schema.js';
import { ConfigError } from '../../lib/errors.js';
import { WRAPPED_KEY_PURPOSE, WRAPPED_SIGNING_KEY_PURPOSE, wrappedKeyConditions } from './key-mode.js';

/**
 * Key-policy actions the account keeps on the private keys the pipeline creates: administration
 * only, listed one by one. No `kms:Decrypt`, `kms:Sign` or `kms:CreateGrant` here, so the account
 * cannot hand itself the private-key operations through IAM: the key policy names the one role that
 * may use each key. (An administrator can still rewrite the key policy — visibly, in CloudTrail.)
 */
export const KEY_ADMIN_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:PutKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:GetPublicKey',
  'kms:ListKeyPolicies',
  'kms:ListResourceTags',
  'kms:ListGrants',
  'kms:RevokeGrant',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:UpdateKeyDescription',
  'kms:EnableKey',
  'kms:DisableKey',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
] as const;

/**
 * Key-policy actions the account keeps on the wrapping key of the cached mode: the administration of
 * {@link KEY_ADMIN_ACTIONS} (without `GetPublicKey`: the key is symmetric) plus its rotation, which
 * CloudFormation turns on and an operator may trigger. No `kms:Decrypt`: that would be possession of
 * every wrapped recipient private key.
 */
const WRAPPING_KEY_ADMIN_ACTIONS = [
  ...KEY_ADMIN_ACTIONS.filter((a) => a !== 'kms:GetPublicKey'),
  'kms:EnableKeyRotation',
  'kms:DisableKeyRotation',
  'kms:RotateKeyOnDemand',
  'kms:ListKeyRotations',
] as const;

/** A private key the pipeline uses, by its JOSE key id. */
export interface PipelineKey {
  /** The JOSE `kid` senders and recipients use. */
  readonly kid: string;
  /** The KMS key. */
  readonly key: kms.IKey;
  /** True when this stack created the key (and so controls its key policy). */
  readonly owned: boolean;
  /** A `KEY_AGREEMENT` P-256 recipient key (JWE `ECDH-ES+A256KW`) rather than an RSA one. */
  readonly agreement?: boolean;
}

/** Properties of {@link PipelineKeys}. */
export interface PipelineKeysProps {
  /** The validated configuration: recipient key ids and the response-signing key id. */
  readonly config: PipelineConfig;
  /** What happens to created keys when they leave the stack (DESTROY schedules deletion). */
  readonly removalPolicy: RemovalPolicy;
  /**
   * The cached key mode's wrapping: kids whose private key is a wrapped blob (no RSA KMS key is
   * created or referenced for them) and the symmetric key the blobs are wrapped under.
   * @default - direct mode: every recipient kid has an RSA KMS key, and there is no wrapping key
   */
  readonly keyWrapping?: KeyWrappingProps;
  /**
   * A data key the team brings (the `existingDataKeyObj` of {@link Itk3SecurePipelineProps}).
   * @default - a symmetric key created with yearly rotation
   */
  readonly existingDataKey?: kms.IKey;
}

/** The cached mode's part of {@link PipelineKeysProps}. */
export interface KeyWrappingProps {
  /** Recipient kids with a wrapped private key. */
  readonly wrappedKids: ReadonlySet<string>;
  /**
   * The response-signing kid whose private key is a wrapped blob: then no KMS response-signing key
   * is created or referenced ({@link PipelineKeys.signingKey} is undefined).
   * @default - the response-signing key is a KMS key
   */
  readonly wrappedSigningKid?: string;
  /**
   * An existing wrapping key.
   * @default - created, unless {@link wrappingKeyArn} names one
   */
  readonly wrappingKey?: kms.IKey;
  /**
   * ARN or key id of an existing wrapping key.
   * @default - created, unless {@link wrappingKey} is given
   */
  readonly wrappingKeyArn?: string;
}

/**
 * Every key of the pipeline:
 * - one key per recipient key id (`recipients[].keys[].kid`), so several kids can be live during a
 *   rotation, of the entry's `keySpec`: `RSA_4096` (default), `RSA_3072` or `RSA_2048`
 *   `ENCRYPT_DECRYPT` for `RSA-OAEP-256`, or `ECC_NIST_P256` `KEY_AGREEMENT` for `ECDH-ES+A256KW`;
 *   a key entry with `kmsKeyId` references that existing key instead of creating one;
 * - the `ECC_NIST_P256` `SIGN_VERIFY` key that signs ITK3 responses (`responseSigning.kid`);
 * - a symmetric customer-managed key with yearly rotation for queues, tables, buckets and logs;
 * - a second one, the **inbound key**, for the inbound (authenticate) queue and its DLQ alone: the
 *   only key a direct-ingestion partner is named on ({@link allowInboundProducer}).
 *
 * Created private keys get a key policy that lets the account administer them and nothing more;
 * {@link grantUnwrap} and {@link grantResponseSigning} add the one role that may use them, in the
 * key policy and (scoped to the key ARNs) in the role's own policy.
 *
 * In the cached key mode (`keyWrapping`), wrapped kids get no RSA key: their key pair was made by
 * `itk3 keys wrap` under the symmetric **wrapping key** (created here unless one is given), and
 * {@link grantUnwrap} lets the decrypt role `kms:Decrypt` with that key only under the wrapped kids'
 * encryption context.
 */
export class PipelineKeys extends Construct {
  /** Customer-managed key for data at rest: queues, tables, buckets, log groups. */
  readonly dataKey: kms.IKey;
  /**
   * Customer-managed key of the inbound queue and its DLQ only, so that what direct-ingestion
   * partners may use reaches nothing else the pipeline stores.
   */
  readonly inboundKey: kms.Key;
  /** Recipient decryption keys by kid, in configuration order. */
  readonly recipientKeys: readonly PipelineKey[];
  /**
   * The KMS response-signing key; undefined when the response-signing key is a wrapped blob
   * ({@link wrappedSigningKid}), which has no KMS key.
   */
  readonly signingKey?: PipelineKey;
  /** Cached key mode: the response-signing kid whose private key is a wrapped blob. */
  readonly wrappedSigningKid?: string;
  /** Cached key mode: the symmetric key the recipient private keys are wrapped under. */
  readonly wrappingKey?: Omit<PipelineKey, 'kid'>;
  /** Cached key mode: kids whose private key is a wrapped blob. Empty in direct mode. */
  readonly wrappedKids: ReadonlySet<string>;

  constructor(scope: Construct, id: string, props: PipelineKeysProps) {
    super(scope, id);
    const { config, removalPolicy, keyWrapping } = props;
    const problems: string[] = [];
    this.wrappedKids = keyWrapping?.wrappedKids ?? new Set();

    if (props.existingDataKey) {
      // Its key policy is the team's: it must let CloudWatch Logs use the key (docs/DEPLOY.md).
      this.dataKey = props.existingDataKey;
    } else {
      const dataKey = new kms.Key(this, 'DataKey', {
        description: 'ITK3 pipeline: encryption at rest of queues, tables, buckets and logs',
        enableKeyRotation: true,
        removalPolicy,
      });
      this.allowLogsService(dataKey);
      this.dataKey = dataKey;
    }
    this.inboundKey = new kms.Key(this, 'InboundKey', {
      description:
        'ITK3 pipeline: encryption at rest of the inbound queue and its DLQ (partners encrypt to it)',
      enableKeyRotation: true,
      removalPolicy,
    });

    const recipientKeys: PipelineKey[] = [];
    for (const [r, recipient] of config.recipients.entries()) {
      for (const [k, entry] of recipient.keys.entries()) {
        // A wrapped kid's key pair lives in its blob: an RSA KMS key would be a second, unused pair.
        if (this.wrappedKids.has(entry.kid)) continue;
        const id = `Recipient${safeId(entry.kid)}`;
        const agreement = entry.keySpec === 'ECC_NIST_P256';
        if (entry.kmsKeyId) {
          const key = this.existingKey(id, entry.kmsKeyId, `recipients.${r}.keys.${k}.kmsKeyId`, problems);
          if (key) recipientKeys.push({ kid: entry.kid, key, owned: false, agreement });
          continue;
        }
        const key = new kms.Key(this, id, {
          description: `ITK3 recipient ${recipient.ods} ${agreement ? 'key-agreement' : 'decryption'} key, kid ${entry.kid}`,
          keySpec: kms.KeySpec[entry.keySpec ?? 'RSA_4096'],
          keyUsage: agreement ? kms.KeyUsage.KEY_AGREEMENT : kms.KeyUsage.ENCRYPT_DECRYPT,
          policy: adminOnlyPolicy(),
          removalPolicy,
        });
        recipientKeys.push({ kid: entry.kid, key, owned: true, agreement });
      }
    }
    this.recipientKeys = recipientKeys;

    const signing = config.responseSigning;
    // Named after the kid like the recipient keys: a new kid is a new key, which is what a
    // signing-key rotation needs (KMS never rotates asymmetric key material itself).
    const signingId = `ResponseSigning${safeId(signing.kid)}`;
    if (keyWrapping?.wrappedSigningKid !== undefined) {
      // The wrapped pair is the kid's one key pair: a KMS key beside it would be a second one.
      this.wrappedSigningKid = keyWrapping.wrappedSigningKid;
    } else {
      const existingSigning = signing.kmsKeyId
        ? this.existingKey(signingId, signing.kmsKeyId, 'responseSigning.kmsKeyId', problems)
        : undefined;
      this.signingKey = existingSigning
        ? { kid: signing.kid, key: existingSigning, owned: false }
        : {
            kid: signing.kid,
            owned: true,
            key: new kms.Key(this, signingId, {
              description: `ITK3 response-signing key, kid ${signing.kid}`,
              keySpec: kms.KeySpec.ECC_NIST_P256,
              keyUsage: kms.KeyUsage.SIGN_VERIFY,
              policy: adminOnlyPolicy(),
              removalPolicy,
            }),
          };
    }

    if (keyWrapping) {
      this.wrappingKey = this.wrapping(keyWrapping, removalPolicy, problems);
    }

    if (problems.length > 0) throw new ConfigError(problems);
  }

  /** kid → key ARN for the recipient keys (what the decrypt function gets as `ITK3_KMS_KEYS`). */
  recipientKeyArns(): Record<string, string> {
    return Object.fromEntries(this.recipientKeys.map((k) => [k.kid, k.key.keyArn]));
  }

  /**
   * Let `role` unwrap content keys: `kms:Decrypt` with every RSA recipient key,
   * `kms:DeriveSharedSecret` with every key-agreement (P-256) recipient key, and in the cached
   * mode `kms:Decrypt` with the wrapping key bound to the wrapped kids' encryption context — nothing
   * else. Call it for the decrypt stage only.
   */
  grantUnwrap(role: iam.IRole): void {
    for (const k of this.recipientKeys) {
      grantExclusive(k, role, [k.agreement ? 'kms:DeriveSharedSecret' : 'kms:Decrypt']);
    }
    if (!this.wrappingKey || this.wrappedKids.size === 0) return;
    this.#grantWrappedDecrypt(
      role,
      wrappedKeyConditions(this.wrappedKids),
      'AllowDecryptOfWrappedRecipientKeysToPipelineRole',
    );
  }

  /**
   * `kms:Decrypt` on the wrapping key for `role`, only under `conditions` (the encryption context of
   * the blobs it may open), in IAM and, for a wrapping key this stack owns, in its key policy. An
   * explicit statement instead of `key.grant`, which cannot carry the condition.
   */
  #grantWrappedDecrypt(
    role: iam.IRole,
    conditions: ReturnType<typeof wrappedKeyConditions>,
    sid: string,
  ): void {
    if (!this.wrappingKey) return;
    iam.Grant.addToPrincipal({
      grantee: role,
      actions: ['kms:Decrypt'],
      resourceArns: [this.wrappingKey.key.keyArn],
      conditions,
    });
    if (this.wrappingKey.owned) {
      this.wrappingKey.key.addToResourcePolicy(
        new iam.PolicyStatement({
          sid,
          principals: [role],
          actions: ['kms:Decrypt'],
          resources: ['*'],
          conditions,
        }),
      );
    }
  }

  /**
   * Let `role` sign ITK3 responses (and audit checkpoints): with a KMS signing key, `kms:Sign` and
   * `kms:GetPublicKey` on it; with a wrapped one, `kms:Decrypt` with the wrapping key only under the
   * signing key's encryption context (purpose `response-sign`, its kid), and nothing on any
   * asymmetric key. Call it for the deliver stage only.
   */
  grantResponseSigning(role: iam.IRole): void {
    if (this.signingKey) {
      grantExclusive(this.signingKey, role, ['kms:Sign', 'kms:GetPublicKey']);
      return;
    }
    if (!this.wrappingKey || this.wrappedSigningKid === undefined) return;
    this.#grantWrappedDecrypt(
      role,
      wrappedKeyConditions([this.wrappedSigningKid], wrappedSigningKeyContext),
      'AllowDecryptOfWrappedSigningKeyToDeliverRole',
    );
  }

  /**
   * Let `role` sign MESH attestations (lib/mesh/attestation.ts) with the response-signing key, under
   * the attestation `typ`: the MESH poller. Sign only: it never reads the public key.
   */
  grantAttestationSigning(role: iam.IRole): void {
    grantExclusive(this.kmsSigningKey('MESH attestations'), role, ['kms:Sign']);
  }

  /** Let `role` read the response-signing public key to check MESH attestations: the authenticate stage. */
  grantAttestationCheck(role: iam.IRole): void {
    grantExclusive(this.kmsSigningKey('MESH attestations'), role, ['kms:GetPublicKey']);
  }

  /** The KMS response-signing key, for a use that has no wrapped-key path. */
  kmsSigningKey(use: string): PipelineKey {
    if (!this.signingKey) {
      throw new ConfigError([
        `keyMode.wrappedSigningKey: ${use} are signed with the KMS response-signing key; a wrapped response-signing key cannot serve them (leave wrappedSigningKey out)`,
      ]);
    }
    return this.signingKey;
  }

  /**
   * The wrapping key: the given one, or a symmetric key with yearly rotation whose policy lets the
   * account administer it and generate wrapped recipient key pairs (`itk3 keys wrap`), and nobody
   * decrypt until {@link grantUnwrap} names the decrypt role.
   */
  private wrapping(
    props: KeyWrappingProps,
    removalPolicy: RemovalPolicy,
    problems: string[],
  ): Omit<PipelineKey, 'kid'> | undefined {
    if (props.wrappingKey) return { key: props.wrappingKey, owned: false };
    if (props.wrappingKeyArn) {
      const key = this.existingKey(
        'RecipientKeyWrapping',
        props.wrappingKeyArn,
        'keyMode.wrappingKeyArn',
        problems,
      );
      return key ? { key, owned: false } : undefined;
    }
    const key = new kms.Key(this, 'RecipientKeyWrapping', {
      description:
        'ITK3 cached key mode: wraps the recipient RSA private keys; kms:Decrypt for the decrypt role only, bound to the itk3 encryption context',
      enableKeyRotation: true,
      alias: `alias/itk3/${Stack.of(this).stackName}/recipient-key-wrapping`,
      policy: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({
            sid: 'AccountAdministersButDoesNotDecrypt',
            principals: [new iam.AccountRootPrincipal()],
            actions: [...WRAPPING_KEY_ADMIN_ACTIONS],
            resources: ['*'],
          }),
          // `itk3 keys wrap` (recipient or `--purpose response-sign` keys): yields a public key and a
          // blob, never plaintext; IAM still decides who.
          new iam.PolicyStatement({
            sid: 'AccountGeneratesWrappedRecipientKeys',
            principals: [new iam.AccountRootPrincipal()],
            actions: ['kms:GenerateDataKeyPairWithoutPlaintext'],
            resources: ['*'],
            conditions: {
              StringEquals: {
                'kms:EncryptionContext:itk3:purpose': [WRAPPED_KEY_PURPOSE, WRAPPED_SIGNING_KEY_PURPOSE],
              },
            },
          }),
        ],
      }),
      removalPolicy,
    });
    return { key, owned: true };
  }

  /**
   * Let a direct-ingestion partner encrypt messages to the inbound queue: `kms:GenerateDataKey` and
   * `kms:Decrypt` (what an SQS producer needs for SSE-KMS) on the inbound key only, only as SQS uses
   * it on the partner's behalf, and only for queues matching `inboundQueueArn` (SQS puts the queue
   * ARN in the encryption context). `exact` says whether that is the queue's ARN or a pattern.
   */
  allowInboundProducer(principal: iam.IPrincipal, inboundQueueArn: string, exact: boolean): void {
    this.inboundKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'PartnerEncryptsToTheInboundQueueOnly',
        principals: [principal],
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: ['*'],
        conditions: {
          StringEquals: { 'kms:ViaService': `sqs.${Stack.of(this).region}.amazonaws.com` },
          [exact ? 'StringEquals' : 'StringLike']: { 'kms:EncryptionContext:aws:sqs:arn': inboundQueueArn },
        },
      }),
    );
  }

  /**
   * CloudWatch Logs encrypts log groups with the data key itself, so the key policy must name the
   * service; the condition keeps it to this account's log groups in this Region.
   */
  private allowLogsService(key: kms.Key): void {
    const stack = Stack.of(this);
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowCloudWatchLogsOfThisAccount',
        principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
        actions: [
          'kms:Encrypt',
          'kms:Decrypt',
          'kms:ReEncryptFrom',
          'kms:ReEncryptTo',
          'kms:GenerateDataKey',
          'kms:DescribeKey',
        ],
        resources: ['*'],
        conditions: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': stack.formatArn({
              service: 'logs',
              resource: 'log-group',
              resourceName: '*',
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          },
        },
      }),
    );
  }

  /**
   * An existing key named by ARN or key id. Aliases are refused: IAM cannot scope a grant to the
   * key behind an alias without a wildcard resource.
   */
  private existingKey(id: string, keyId: string, where: string, problems: string[]): kms.IKey | undefined {
    if (Token.isUnresolved(keyId)) return kms.Key.fromKeyArn(this, id, keyId);
    if (keyId.startsWith('alias/') || /^arn:[^:]+:kms:[^:]*:[^:]*:alias\//.test(keyId)) {
      problems.push(`${where}: "${keyId}" is an alias; give the key ARN or key id so grants name the key`);
      return undefined;
    }
    if (keyId.startsWith('arn:')) {
      const parts = Arn.split(keyId, ArnFormat.SLASH_RESOURCE_NAME);
      if (parts.service !== 'kms' || parts.resource !== 'key' || !parts.resourceName) {
        problems.push(`${where}: "${keyId}" is not a KMS key ARN`);
        return undefined;
      }
      return kms.Key.fromKeyArn(this, id, keyId);
    }
    if (!/^(mrk-)?[0-9a-f-]{32,36}$/.test(keyId)) {
      problems.push(`${where}: "${keyId}" is neither a KMS key ARN nor a key id`);
      return undefined;
    }
    return kms.Key.fromKeyArn(
      this,
      id,
      Stack.of(this).formatArn({ service: 'kms', resource: 'key', resourceName: keyId }),
    );
  }
}

/** Key policy of a created private key: account administration only (see {@link KEY_ADMIN_ACTIONS}). */
function adminOnlyPolicy(): iam.PolicyDocument {
  return new iam.PolicyDocument({
    statements: [
      new iam.PolicyStatement({
        sid: 'AccountAdministersButDoesNotUse',
        principals: [new iam.AccountRootPrincipal()],
        actions: [...KEY_ADMIN_ACTIONS],
        resources: ['*'],
      }),
    ],
  });
}

/**
 * Grant `actions` on `k` to `role`: in the role's policy, scoped to the key ARN (the grant helper),
 * and — for keys this stack owns — in the key policy, which is what makes the role the only user.
 */
function grantExclusive(k: PipelineKey, role: iam.IRole, actions: string[]): void {
  k.key.grant(role, ...actions);
  if (k.owned) {
    k.key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: `Allow${actions.map((a) => a.replace('kms:', '')).join('')}ToPipelineRole`,
        principals: [role],
        actions,
        resources: ['*'],
      }),
    );
  }
}

/**
 * A construct id from a kid (kids may hold `.`, `_`, `-`). Injective, so two kids never share a
 * logical id, and stable, so reordering the configuration never replaces a key.
 */
function safeId(kid: string): string {
  return kid.replace(/[^A-Za-z0-9]/g, (c) => `_${c.charCodeAt(0).toString(16)}`);
}
