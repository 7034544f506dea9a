/**
 * The cached key mode in the synthesized stack (docs/KEY-MODES.md): the decrypt role may
 * `kms:Decrypt` with the wrapping key only under the wrapped kids' encryption context and with no
 * RSA key for a wrapped kid; no other role may use the wrapping key; the decrypt function gets the
 * variables `keyServiceFromEnv` reads (the wrapped keys compiled into its bundle, since they do not
 * fit Lambda's 4 KB environment); direct mode is unchanged; every configuration problem fails the
 * synth, all listed at once; the CDK app reads the mode from its context; cdk-nag stays clean.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as kms from 'aws-cdk-lib/aws-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildApp, CONTEXT } from '../../cdk/build-app.js';
import type { CachedKeyMode, WrappedSigningKey } from '../../cdk/constructs/key-mode.js';
import { KEY_ADMIN_ACTIONS } from '../../cdk/constructs/keys.js';
import { nagPacks } from '../../cdk/nag.js';
import { Itk3PipelineStack } from '../../cdk/pipeline-stack.js';
import type {
  RecipientPublicJwk,
  ResponseSigningPublicJwk,
} from '../../lib/adapters/aws/deployment-names.js';
import { KEY_MODE_ENV, wrappedKeyContext } from '../../lib/adapters/aws/deployment-names.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import { ConfigError } from '../../lib/errors.js';
import { ENV } from '../../lib/infra/definitions.js';
import { STAGES, type StageName } from '../../lib/pipeline/topology.js';
import {
  cdkJsonContext,
  IMPORTED_RECIPIENT_KEY_ARN,
  PROJECT_ROOT,
  testApp,
  validConfig,
} from './fixtures.js';

type Json = Record<string, unknown>;
interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Principal?: unknown;
  Condition?: Json;
}
interface Resource {
  Type: string;
  Properties: Json;
  DeletionPolicy?: string;
}

const KIDS = ['a83627-enc-1', 'a83627-enc-2', 'b12345-enc-1'] as const;
const EXISTING_WRAPPING_KEY_ARN =
  'arn:aws:kms:eu-west-2:123456789012:key/0f0e0d0c-1234-4abc-8def-0123456789ab';
/** A stand-in for a wrapped RSA-4096 private key: the size of one, not one. */
const blob = () => randomBytes(2459).toString('base64');
const arr = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function publicJwk(kid: string): RecipientPublicJwk {
  const { n, e } = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
  return { kty: 'RSA', kid, alg: 'RSA-OAEP-256', use: 'enc', n: n as string, e: e as string };
}

/** The fixture configuration without the existing KMS key: every kid can be wrapped. */
function allOwned(config: PipelineConfigInput): PipelineConfigInput {
  return {
    ...config,
    recipients: config.recipients.map((r) => ({ ...r, keys: r.keys.map(({ kid }) => ({ kid })) })),
  };
}

/** An App that builds templates without bundling the functions (for tests that read no bundle). */
function appWithoutBundling(): App {
  return new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } });
}

/** What a synthesized stack looks like to the assertions below. */
class Synth {
  readonly template: Template;
  readonly resources: Record<string, Resource>;
  constructor(readonly stack: Itk3PipelineStack) {
    this.template = Template.fromStack(stack);
    this.resources = this.template.toJSON().Resources as Record<string, Resource>;
  }
  logicalId(construct: { node: { defaultChild?: unknown } }): string {
    return this.stack.getLogicalId(construct.node.defaultChild as never);
  }
  fn(stage: StageName | 'ingest') {
    return stage === 'ingest' ? this.stack.pipeline.ingestion.fn : this.stack.pipeline.stages[stage].fn;
  }
  roleId(stage: StageName | 'ingest'): string {
    return this.logicalId(this.fn(stage).executionRole);
  }
  env(stage: StageName | 'ingest'): Json {
    const props = this.resources[this.logicalId(this.fn(stage))]!.Properties;
    return (props.Environment as { Variables: Json }).Variables;
  }
  /** Every IAM policy statement with the logical ids of the roles it is attached to. */
  iamStatements(): { roles: string[]; statement: Statement }[] {
    return Object.values(this.resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .flatMap((r) => {
        const roles = arr(r.Properties.Roles as { Ref: string }[]).map((ref) => ref.Ref);
        const doc = r.Properties.PolicyDocument as { Statement: Statement[] };
        return doc.Statement.map((statement) => ({ roles, statement }));
      });
  }
  /** The statement's Resource as written for `key`: GetAtt of a created key, else its ARN. */
  keyRef(key: kms.IKey): unknown {
    return key.node.defaultChild ? { 'Fn::GetAtt': [this.logicalId(key), 'Arn'] } : key.keyArn;
  }
  touches(statement: Statement, key: kms.IKey): boolean {
    const ref = JSON.stringify(this.keyRef(key));
    return arr(statement.Resource).some((r) => JSON.stringify(r) === ref);
  }
  keyPolicy(key: kms.IKey): Statement[] {
    return (this.resources[this.logicalId(key)]!.Properties.KeyPolicy as { Statement: Statement[] })
      .Statement;
  }
  outputs(): Record<string, { Value: unknown }> {
    return this.template.toJSON().Outputs as Record<string, { Value: unknown }>;
  }
}

/** The encryption-context condition, written out literally so a change in the code shows here. */
function contextCondition(kids: readonly string[]): Json {
  return {
    StringEquals: {
      'kms:EncryptionContext:itk3:kid': kids.length === 1 ? kids[0] : [...kids].sort(),
      'kms:EncryptionContext:itk3:purpose': 'recipient-decrypt',
    },
    'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['itk3:kid', 'itk3:purpose'] },
  };
}

function issuesOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

let base: PipelineConfigInput;
let owned: PipelineConfigInput;
let wrapped: Record<string, string>;
let jwks: RecipientPublicJwk[];
let cachedApp: App;
let cached: Synth;

beforeAll(async () => {
  base = await validConfig();
  owned = allOwned(base);
  wrapped = Object.fromEntries(KIDS.map((kid) => [kid, blob()]));
  jwks = KIDS.map(publicJwk);
  const outdir = mkdtempSync(join(tmpdir(), 'itk3-cdk-cached-'));
  // The SDK beside the assets, as the Lambda runtime provides it (the bundles leave it out).
  symlinkSync(resolve('node_modules'), join(outdir, 'node_modules'));
  cachedApp = testApp(outdir);
  cached = new Synth(
    new Itk3PipelineStack(cachedApp, 'Itk3Cached', {
      config: owned,
      keyMode: { mode: 'cached', wrappedKeys: wrapped, publicJwks: jwks, cacheTtl: Duration.minutes(2) },
    }),
  );
});

describe('cached key mode', () => {
  it('gives decrypt ITK3_KEY_MODE=cached, the wrapping key and the TTL, and no other function any of them', () => {
    const wrappingKey = cached.stack.pipeline.keys.wrappingKey!.key;
    expect(cached.env('decrypt')).toMatchObject({
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappingKeyId]: cached.keyRef(wrappingKey),
      [KEY_MODE_ENV.ttlSeconds]: '120',
      // No RSA KMS key for any kid: nothing stays on direct KMS.
      ITK3_KMS_KEYS: '{}',
    });
    for (const stage of [...STAGES, 'ingest'] as const) {
      const names = Object.keys(cached.env(stage));
      expect(names).not.toContain(KEY_MODE_ENV.wrappedKeys);
      if (stage !== 'decrypt') {
        expect(names.filter((n) => (Object.values(KEY_MODE_ENV) as string[]).includes(n))).toEqual([]);
      }
    }
  });

  it('puts the wrapped keys into the decrypt code asset, which sets ITK3_WRAPPED_KEYS before any module runs', () => {
    const assembly = cachedApp.synth();
    const manifest = JSON.parse(
      readFileSync(join(assembly.directory, `${cached.stack.artifactId}.assets.json`), 'utf8'),
    ) as { files: Record<string, { source: { path: string } }> };
    const assetOf = (stage: StageName | 'ingest') => {
      const code = cached.resources[cached.logicalId(cached.fn(stage))]!.Properties.Code as { S3Key: string };
      const hash = code.S3Key.replace(/\.zip$/, '');
      return join(assembly.directory, manifest.files[hash]!.source.path, 'index.mjs');
    };
    const decrypt = assetOf('decrypt');
    const script = `await import(${JSON.stringify(pathToFileURL(decrypt).href)}); process.stdout.write('\\n@@' + process.env.ITK3_WRAPPED_KEYS);`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      // A variable of the same name in the Lambda environment does not win over the synthesized keys.
      env: { ...process.env, ITK3_WRAPPED_KEYS: '{"stale":"AAAA"}', POWERTOOLS_LOG_LEVEL: 'SILENT' },
      timeout: 60_000,
    });
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.split('\n@@').at(-1) ?? '')).toEqual(wrapped);

    for (const stage of [...STAGES.filter((s) => s !== 'decrypt'), 'ingest'] as const) {
      const code = readFileSync(assetOf(stage), 'utf8');
      for (const value of Object.values(wrapped)) expect(code).not.toContain(value.slice(0, 64));
    }
  });

  it('creates no RSA key for a wrapped kid, and one rotated, aliased, retained symmetric wrapping key', () => {
    cached.template.resourcePropertiesCountIs('AWS::KMS::Key', { KeySpec: 'RSA_4096' }, 0);
    expect(cached.stack.pipeline.keys.recipientKeys).toEqual([]);
    const wrappingKey = cached.stack.pipeline.keys.wrappingKey!;
    expect(wrappingKey.owned).toBe(true);
    const resource = cached.resources[cached.logicalId(wrappingKey.key)]!;
    expect(resource.Properties).toMatchObject({ EnableKeyRotation: true });
    expect(resource.Properties.KeySpec).toBeUndefined();
    expect(resource.DeletionPolicy).toBe('Retain');
    cached.template.hasResourceProperties('AWS::KMS::Alias', {
      AliasName: 'alias/itk3/Itk3Cached/recipient-key-wrapping',
      TargetKeyId: { 'Fn::GetAtt': [cached.logicalId(wrappingKey.key), 'Arn'] },
    });
  });

  it("lets decrypt kms:Decrypt with the wrapping key only, under the wrapped kids' encryption context", () => {
    const wrappingKey = cached.stack.pipeline.keys.wrappingKey!.key;
    const decrypts = cached
      .iamStatements()
      .filter(({ roles }) => roles.includes(cached.roleId('decrypt')))
      .map(({ statement }) => statement)
      .filter(
        (s) => s.Effect === 'Allow' && arr(s.Action).some((a) => a === 'kms:Decrypt' || a.includes('*')),
      );
    const grants = decrypts.flatMap((statement) =>
      arr(statement.Resource).map((resource) => ({ statement, resource: JSON.stringify(resource) })),
    );
    const wrappingRef = JSON.stringify(cached.keyRef(wrappingKey));
    // Besides the wrapping key only the data key, which reading the SSE-KMS source queue needs.
    const dataKeyRef = JSON.stringify(cached.keyRef(cached.stack.pipeline.keys.dataKey));
    expect(new Set(grants.map((g) => g.resource))).toEqual(new Set([wrappingRef, dataKeyRef]));
    const onWrapping = grants.filter((g) => g.resource === wrappingRef).map((g) => g.statement);
    expect(onWrapping).toHaveLength(1);
    expect(arr(onWrapping[0]!.Resource)).toHaveLength(1);
    expect(arr(onWrapping[0]!.Action)).toEqual(['kms:Decrypt']);
    expect(onWrapping[0]!.Condition).toEqual(contextCondition(KIDS));
    // The condition names exactly the context CachedKeyService sends.
    expect(Object.keys(wrappedKeyContext('k')).sort()).toEqual(['itk3:kid', 'itk3:purpose']);
    expect(wrappedKeyContext('k')['itk3:purpose']).toBe('recipient-decrypt');
  });

  it('lets no other role use the wrapping key, and keeps kms:Decrypt out of the account statements', () => {
    const wrappingKey = cached.stack.pipeline.keys.wrappingKey!.key;
    const roles = cached
      .iamStatements()
      .filter(({ statement }) => cached.touches(statement, wrappingKey))
      .flatMap(({ roles }) => roles);
    expect(new Set(roles)).toEqual(new Set([cached.roleId('decrypt')]));

    const policy = cached.keyPolicy(wrappingKey);
    for (const s of policy) for (const a of arr(s.Action)) expect(a).not.toContain('*');
    const users = policy.filter((s) =>
      arr(s.Action).some((a) =>
        ['kms:Decrypt', 'kms:ReEncryptFrom', 'kms:CreateGrant', 'kms:GenerateDataKeyPair'].includes(a),
      ),
    );
    expect(users).toHaveLength(1);
    expect(users[0]!.Principal).toEqual({ AWS: { 'Fn::GetAtt': [cached.roleId('decrypt'), 'Arn'] } });
    expect(arr(users[0]!.Action)).toEqual(['kms:Decrypt']);
    expect(users[0]!.Condition).toEqual(contextCondition(KIDS));

    const account = policy.filter((s) => JSON.stringify(s.Principal).includes(':root'));
    const accountActions = account.flatMap((s) => arr(s.Action));
    expect(accountActions).toContain('kms:GenerateDataKeyPairWithoutPlaintext');
    expect(accountActions).toEqual(
      expect.arrayContaining(KEY_ADMIN_ACTIONS.filter((a) => a !== 'kms:GetPublicKey')),
    );
    expect(accountActions.filter((a) => a.includes('Decrypt') || a.includes('Encrypt'))).toEqual([]);
    const generate = account.find((s) => arr(s.Action).includes('kms:GenerateDataKeyPairWithoutPlaintext'))!;
    expect(arr(generate.Action)).toEqual(['kms:GenerateDataKeyPairWithoutPlaintext']);
    // Recipient keys and the response-signing key (`keys wrap --purpose response-sign`).
    expect(generate.Condition).toEqual({
      StringEquals: { 'kms:EncryptionContext:itk3:purpose': ['recipient-decrypt', 'response-sign'] },
    });
  });

  it('publishes the public JWKs of the wrapped kids, the wrapping key and an empty RecipientKeyArns', () => {
    const outputs = cached.outputs();
    expect(JSON.parse(outputs.RecipientPublicJwks!.Value as string)).toEqual({ keys: jwks });
    expect(outputs.RecipientKeyArns!.Value).toBe('{}');
    expect(outputs.RecipientKeyWrappingKeyArn!.Value).toEqual(
      cached.keyRef(cached.stack.pipeline.keys.wrappingKey!.key),
    );
  });

  it.each([0, 1])('cdk-nag pack %i reports no unacknowledged finding', (index) => {
    const report = nagPacks(cachedApp)[index]!.validateScope(cached.stack);
    const findings = report.violations.map(
      (v) => `${v.ruleName} (${v.severity}): ${v.violatingResources.map((r) => r.constructPath).join(', ')}`,
    );
    expect(findings).toEqual([]);
  });
});

/** The response-signing kid of the fixture configuration. */
const SIGNING_KID = 'gw-response-1';

function signingJwk(kid: string): ResponseSigningPublicJwk {
  const { x, y } = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
  return { kty: 'EC', kid, alg: 'ES256', use: 'sig', crv: 'P-256', x: x as string, y: y as string };
}

/** A stand-in for a wrapped P-256 private key: the size of one. */
const signingBlob = () => randomBytes(300).toString('base64');

describe('cached key mode with a wrapped response-signing key', () => {
  let app: App;
  let signing: Synth;
  let signingKey: WrappedSigningKey;

  beforeAll(() => {
    app = appWithoutBundling();
    signingKey = { kid: SIGNING_KID, wrappedPrivateKey: signingBlob(), publicJwk: signingJwk(SIGNING_KID) };
    signing = new Synth(
      new Itk3PipelineStack(app, 'Itk3CachedSigning', {
        config: owned,
        keyMode: { mode: 'cached', wrappedKeys: wrapped, publicJwks: jwks, wrappedSigningKey: signingKey },
      }),
    );
  });

  const signingCondition = {
    StringEquals: {
      'kms:EncryptionContext:itk3:kid': SIGNING_KID,
      'kms:EncryptionContext:itk3:purpose': 'response-sign',
    },
    'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['itk3:kid', 'itk3:purpose'] },
  };

  it('gives the deliver function alone the wrapped signing key, the cached mode and the wrapping key', () => {
    const wrappingKey = signing.stack.pipeline.keys.wrappingKey!.key;
    expect(signing.env('deliver')).toMatchObject({
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappedSigningKeys]: JSON.stringify({ [SIGNING_KID]: signingKey.wrappedPrivateKey }),
      [KEY_MODE_ENV.wrappingKeyId]: signing.keyRef(wrappingKey),
      [KEY_MODE_ENV.ttlSeconds]: '300',
      // No KMS key to sign with: responses and checkpoints are signed in the function.
      [ENV.kmsKeys]: '{}',
      [ENV.auditCheckpointKid]: SIGNING_KID,
    });
    expect(signing.env('deliver')[KEY_MODE_ENV.wrappedKeys]).toBeUndefined();
    for (const stage of [...STAGES, 'ingest'] as const) {
      if (stage === 'deliver') continue;
      expect(Object.keys(signing.env(stage))).not.toContain(KEY_MODE_ENV.wrappedSigningKeys);
    }
    // Decrypt keeps its own cached mode, unchanged.
    expect(signing.env('decrypt')).toMatchObject({ [KEY_MODE_ENV.mode]: 'cached' });
  });

  it('creates no KMS signing key and grants kms:Sign to nobody', () => {
    expect(signing.stack.pipeline.keys.signingKey).toBeUndefined();
    signing.template.resourcePropertiesCountIs('AWS::KMS::Key', { KeyUsage: 'SIGN_VERIFY' }, 0);
    const signs = signing
      .iamStatements()
      .filter(({ statement }) =>
        arr(statement.Action).some((a) => a === 'kms:Sign' || a === 'kms:GetPublicKey'),
      );
    expect(signs).toEqual([]);
  });

  it('lets deliver kms:Decrypt with the wrapping key only under the signing context, in IAM and the key policy', () => {
    const wrappingKey = signing.stack.pipeline.keys.wrappingKey!.key;
    const onWrapping = signing
      .iamStatements()
      .filter(({ statement }) => signing.touches(statement, wrappingKey));
    const byRole = new Map(onWrapping.flatMap(({ roles, statement }) => roles.map((r) => [r, statement])));
    // One statement per role: a second, looser grant to either role would otherwise hide behind the map.
    expect(onWrapping.flatMap(({ roles }) => roles).sort()).toEqual(
      [signing.roleId('decrypt'), signing.roleId('deliver')].sort(),
    );
    const deliver = byRole.get(signing.roleId('deliver'))!;
    expect(arr(deliver.Action)).toEqual(['kms:Decrypt']);
    expect(deliver.Condition).toEqual(signingCondition);
    // The decrypt role's grant is still the recipient context alone: neither role opens the other's blob.
    expect(byRole.get(signing.roleId('decrypt'))!.Condition).toEqual(contextCondition(KIDS));

    const users = signing.keyPolicy(wrappingKey).filter((s) => arr(s.Action).includes('kms:Decrypt'));
    expect(users.map((s) => [s.Principal, s.Condition])).toEqual(
      expect.arrayContaining([
        [{ AWS: { 'Fn::GetAtt': [signing.roleId('deliver'), 'Arn'] } }, signingCondition],
        [{ AWS: { 'Fn::GetAtt': [signing.roleId('decrypt'), 'Arn'] } }, contextCondition(KIDS)],
      ]),
    );
    expect(users).toHaveLength(2);
  });

  it('publishes the public JWK as ResponseSigningPublicJwk instead of a KMS key ARN', () => {
    const outputs = signing.outputs();
    expect(JSON.parse(outputs.ResponseSigningPublicJwk!.Value as string)).toEqual(signingKey.publicJwk);
    expect(outputs.ResponseSigningKeyArn).toBeUndefined();
  });

  it.each([0, 1])('cdk-nag pack %i reports no unacknowledged finding', (index) => {
    const report = nagPacks(app)[index]!.validateScope(signing.stack);
    const findings = report.violations.map(
      (v) => `${v.ruleName} (${v.severity}): ${v.violatingResources.map((r) => r.constructPath).join(', ')}`,
    );
    expect(findings).toEqual([]);
  });

  it('refuses another kid, a kmsKeyId beside it, a bad blob or JWK, and the MESH poller', () => {
    const synth = (config: PipelineConfigInput, key: Partial<WrappedSigningKey>, extra: object = {}) =>
      issuesOf(
        () =>
          new Itk3PipelineStack(appWithoutBundling(), 'Itk3BadSigning', {
            config,
            keyMode: { mode: 'cached', wrappedKeys: wrapped, wrappedSigningKey: key as WrappedSigningKey },
            ...extra,
          }),
      );
    expect(
      synth(owned, { ...signingKey, kid: 'gw-response-2', publicJwk: signingJwk('gw-response-2') }),
    ).toEqual([
      expect.stringMatching(
        /^keyMode\.wrappedSigningKey\.kid: "gw-response-2" is not responseSigning\.kid "gw-response-1"/,
      ),
    ]);
    const withKmsKey = {
      ...owned,
      responseSigning: { kid: SIGNING_KID, kmsKeyId: EXISTING_WRAPPING_KEY_ARN },
    };
    expect(synth(withKmsKey, signingKey)).toEqual([
      expect.stringMatching(/^responseSigning\.kmsKeyId: .*a kid is one key pair/),
    ]);
    const { x: _x, ...noX } = signingKey.publicJwk;
    expect(
      synth(owned, {
        ...signingKey,
        wrappedPrivateKey: 'AAAA',
        publicJwk: { ...noX, alg: 'ECDH-ES+A256KW', use: 'enc', d: 'secret' } as never,
      }),
    ).toEqual([
      'keyMode.wrappedSigningKey.wrappedPrivateKey: decodes to 3 bytes: too short for a wrapped P-256 private key (use wrappedPrivateKey of itk3 keys wrap)',
      'keyMode.wrappedSigningKey.publicJwk: holds private key members (d); publish the public JWK only',
      'keyMode.wrappedSigningKey.publicJwk: x and y are required',
      'keyMode.wrappedSigningKey.publicJwk: alg must be "ES256"',
      'keyMode.wrappedSigningKey.publicJwk: use must be "sig"',
    ]);
    expect(
      synth(owned, signingKey, {
        mesh: { url: 'https://mesh.example', mailboxes: [{ mailboxId: 'X26ABC1' }] },
      }),
    ).toEqual([expect.stringContaining('cannot be combined with mesh')]);
  });
});

describe('cached key mode beside direct kids, with an existing wrapping key', () => {
  let app: App;
  let hybrid: Synth;

  beforeAll(() => {
    app = appWithoutBundling();
    hybrid = new Synth(
      new Itk3PipelineStack(app, 'Itk3Hybrid', {
        // a83627-enc-2 is an existing KMS key (fixtures), b12345-enc-1 one the stack creates.
        config: base,
        keyMode: {
          mode: 'cached',
          wrappedKeys: { 'a83627-enc-1': wrapped['a83627-enc-1']! },
          directKids: ['a83627-enc-2', 'b12345-enc-1'],
          wrappingKeyArn: EXISTING_WRAPPING_KEY_ARN,
        },
      }),
    );
  });

  it('keeps RSA keys for the direct kids only, and decrypt on both kinds', () => {
    const keys = hybrid.stack.pipeline.keys;
    expect(keys.recipientKeys.map((k) => k.kid).sort()).toEqual(['a83627-enc-2', 'b12345-enc-1']);
    hybrid.template.resourcePropertiesCountIs('AWS::KMS::Key', { KeySpec: 'RSA_4096' }, 1);
    expect(keys.wrappingKey).toMatchObject({ owned: false });
    expect(keys.wrappingKey!.key.keyArn).toBe(EXISTING_WRAPPING_KEY_ARN);

    const decrypt = hybrid
      .iamStatements()
      .filter(({ roles }) => roles.includes(hybrid.roleId('decrypt')))
      .map(({ statement }) => statement);
    for (const k of keys.recipientKeys) {
      const grants = decrypt.filter((s) => hybrid.touches(s, k.key));
      expect(grants.flatMap((s) => arr(s.Action))).toEqual(['kms:Decrypt']);
      expect(grants[0]!.Condition).toBeUndefined();
    }
    const onWrapping = decrypt.filter((s) => hybrid.touches(s, keys.wrappingKey!.key));
    expect(onWrapping).toHaveLength(1);
    expect(onWrapping[0]!.Condition).toEqual(contextCondition(['a83627-enc-1']));
    const others = hybrid
      .iamStatements()
      .filter(({ statement }) => hybrid.touches(statement, keys.wrappingKey!.key))
      .flatMap(({ roles }) => roles);
    expect(new Set(others)).toEqual(new Set([hybrid.roleId('decrypt')]));
  });

  it('keeps the logical id a direct kid had in direct mode, so switching modes replaces no key', () => {
    const direct = new Itk3PipelineStack(appWithoutBundling(), 'Itk3Hybrid', { config: base });
    const idOf = (stack: Itk3PipelineStack, kid: string) =>
      stack.getLogicalId(
        stack.pipeline.keys.recipientKeys.find((k) => k.kid === kid)!.key.node.defaultChild as never,
      );
    expect(idOf(hybrid.stack, 'b12345-enc-1')).toBe(idOf(direct, 'b12345-enc-1'));
  });

  it('maps only the direct kids to KMS keys, and names the existing wrapping key', () => {
    const env = hybrid.env('decrypt');
    expect(env[KEY_MODE_ENV.mode]).toBe('cached');
    expect(env[KEY_MODE_ENV.wrappingKeyId]).toBe(EXISTING_WRAPPING_KEY_ARN);
    expect(env[KEY_MODE_ENV.ttlSeconds]).toBe('300');
    const map = JSON.stringify(env.ITK3_KMS_KEYS);
    expect(map).toContain('a83627-enc-2');
    expect(map).toContain(IMPORTED_RECIPIENT_KEY_ARN);
    expect(map).toContain('b12345-enc-1');
    expect(map).not.toContain('a83627-enc-1');
    const arns = JSON.stringify(hybrid.outputs().RecipientKeyArns!.Value);
    expect(arns).toContain('b12345-enc-1');
    expect(arns).not.toContain('a83627-enc-1');
    // No JWKs given: no output claims to list the wrapped kids' public keys.
    expect(hybrid.outputs().RecipientPublicJwks).toBeUndefined();
  });

  it.each([0, 1])('cdk-nag pack %i reports no unacknowledged finding', (index) => {
    const report = nagPacks(app)[index]!.validateScope(hybrid.stack);
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
  });
});

describe('cached key mode before any kid is wrapped (the deployment that creates the wrapping key)', () => {
  it('creates the wrapping key, grants it to nobody, and leaves decrypt on direct KMS', () => {
    const s = new Synth(
      new Itk3PipelineStack(appWithoutBundling(), 'Itk3Bootstrap', {
        config: base,
        keyMode: { mode: 'cached', wrappedKeys: {}, directKids: [...KIDS] },
      }),
    );
    const wrappingKey = s.stack.pipeline.keys.wrappingKey!.key;
    expect(s.iamStatements().filter(({ statement }) => s.touches(statement, wrappingKey))).toEqual([]);
    expect(s.keyPolicy(wrappingKey).filter((st) => arr(st.Action).includes('kms:Decrypt'))).toEqual([]);
    expect(
      Object.keys(s.env('decrypt')).filter((n) => n.startsWith('ITK3_KEY_') || n.startsWith('ITK3_WRAP')),
    ).toEqual([]);
    expect(s.outputs().RecipientKeyWrappingKeyArn).toBeDefined();
  });
});

describe('direct key mode', () => {
  it("is the default: { mode: 'direct' } synthesizes the template of no keyMode, without a wrapping key", () => {
    const implicit = Template.fromStack(
      new Itk3PipelineStack(appWithoutBundling(), 'S', { config: base }),
    ).toJSON();
    const explicit = Template.fromStack(
      new Itk3PipelineStack(appWithoutBundling(), 'S', { config: base, keyMode: { mode: 'direct' } }),
    ).toJSON();
    expect(explicit).toEqual(implicit);
    const text = JSON.stringify(implicit);
    for (const name of Object.values(KEY_MODE_ENV)) expect(text).not.toContain(name);
    expect(text).not.toContain('RecipientKeyWrapping');
    expect(Object.keys(implicit.Outputs as Json)).not.toContain('RecipientPublicJwks');
  });
});

describe('cached key mode validated at synth', () => {
  const synth = (config: PipelineConfigInput, keyMode: Partial<CachedKeyMode>) =>
    issuesOf(
      () =>
        new Itk3PipelineStack(appWithoutBundling(), 'S', {
          config,
          keyMode: { mode: 'cached', wrappedKeys: {}, ...keyMode },
        }),
    );

  it('lists every recipient kid without a wrapped key, at once', () => {
    const problems = synth(owned, { wrappedKeys: { 'a83627-enc-1': wrapped['a83627-enc-1']! } });
    expect(problems).toEqual([
      expect.stringMatching(
        /^keyMode\.wrappedKeys: no wrapped key for kid "a83627-enc-2" \(recipient A83627\)/,
      ),
      expect.stringMatching(
        /^keyMode\.wrappedKeys: no wrapped key for kid "b12345-enc-1" \(recipient B12345\)/,
      ),
    ]);
    expect(synth(owned, {})).toHaveLength(3);
  });

  it('refuses blobs that are not base64 or too short to be a wrapped key', () => {
    const problems = synth(owned, {
      wrappedKeys: {
        ...wrapped,
        'a83627-enc-1': 'not base64!',
        'a83627-enc-2': 'AAAA',
        'b12345-enc-1': `${wrapped['b12345-enc-1']}=`,
      },
    });
    expect(problems).toEqual([
      'keyMode.wrappedKeys.a83627-enc-1: not valid base64',
      expect.stringMatching(/^keyMode\.wrappedKeys\.a83627-enc-2: decodes to 3 bytes: too short/),
      'keyMode.wrappedKeys.b12345-enc-1: not valid base64',
    ]);
  });

  it('accepts a P-256-sized blob only for a kid whose keySpec is ECC_NIST_P256', () => {
    const p256Blob = randomBytes(300).toString('base64');
    const withP256: PipelineConfigInput = {
      ...owned,
      recipients: owned.recipients.map((r) => ({
        ...r,
        keys: r.keys.map((k) => (k.kid === 'a83627-enc-1' ? { ...k, keySpec: 'ECC_NIST_P256' as const } : k)),
      })),
    };
    const problems = synth(withP256, {
      wrappedKeys: { ...wrapped, 'a83627-enc-1': p256Blob, 'b12345-enc-1': p256Blob },
    });
    expect(problems).toEqual([
      expect.stringMatching(
        /^keyMode\.wrappedKeys\.b12345-enc-1: decodes to 300 bytes: too short for a wrapped RSA private key/,
      ),
    ]);
  });

  it('refuses a wrapped key for an unknown kid, and a kid that is also an existing KMS key', () => {
    const problems = synth(base, { wrappedKeys: { ...wrapped, 'zz-enc-9': blob() } });
    expect(problems).toEqual([
      expect.stringMatching(
        /^recipients\.0\.keys\.1: kid "a83627-enc-2" names an existing KMS key \(kmsKeyId\) and also has a wrapped key/,
      ),
      'keyMode.wrappedKeys.zz-enc-9: not a recipient kid of the configuration',
    ]);
  });

  it('checks direct kids, the TTL, the public JWKs and the wrapping key', () => {
    const problems = synth(owned, {
      wrappedKeys: wrapped,
      directKids: ['a83627-enc-1', 'nope'],
      cacheTtl: Duration.days(2),
      publicJwks: [
        { ...jwks[0]!, d: 'secret' } as unknown as RecipientPublicJwk,
        publicJwk('not-wrapped'),
        { ...jwks[1]!, alg: 'RSA1_5' } as unknown as RecipientPublicJwk,
      ],
      wrappingKey: kms.Alias.fromAliasName(new Stack(), 'Alias', 'alias/somebody-else'),
      wrappingKeyArn: EXISTING_WRAPPING_KEY_ARN,
    });
    expect([...problems].sort()).toEqual(
      [
        'keyMode.directKids: "a83627-enc-1" is also wrapped; choose one',
        'keyMode.directKids: "nope" is not a recipient kid of the configuration',
        'keyMode.cacheTtl: whole seconds from 1 to 86400, not 2 days',
        'keyMode.publicJwks.0: holds private key members (d); publish the public JWK only',
        'keyMode.publicJwks.1: kid "not-wrapped" has no wrapped key',
        'keyMode.publicJwks.2: alg must be "RSA-OAEP-256"',
        'keyMode: give wrappingKey or wrappingKeyArn, not both',
        'keyMode.wrappingKey: "alias/somebody-else" is an alias; give the key itself so grants name the key',
      ].sort(),
    );
  });

  it('refuses a TTL in fractions of a second', () => {
    expect(synth(owned, { wrappedKeys: wrapped, cacheTtl: Duration.millis(1500) })).toEqual([
      'keyMode.cacheTtl: whole seconds from 1 to 86400, not 1 second 500 millis',
    ]);
  });

  it('refuses a wrapping key ARN that is an alias', () => {
    const problems = synth(owned, {
      wrappedKeys: wrapped,
      wrappingKeyArn: 'arn:aws:kms:eu-west-2:123456789012:alias/itk3-wrapping',
    });
    expect(problems).toEqual([expect.stringMatching(/^keyMode\.wrappingKeyArn: .* is an alias/)]);
  });
});

describe('the CDK app reads the key mode from its context', () => {
  let dir: string;
  let configFile: string;
  const context = (extra: Record<string, string>) => ({
    ...cdkJsonContext(),
    'aws:cdk:bundling-stacks': [],
    [CONTEXT.configFile]: configFile,
    ...extra,
  });
  const build = (extra: Record<string, string>) =>
    buildApp({ nag: false, appProps: { context: context(extra), outdir: dir } });
  const record = (kid: string, wrappingKeyArn = EXISTING_WRAPPING_KEY_ARN) => ({
    kid,
    wrappedPrivateKey: wrapped[kid]!,
    publicJwk: jwks.find((j) => j.kid === kid)!,
    wrappingKeyArn,
  });
  const file = (name: string, content: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
    return path;
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'itk3-cdk-keymode-'));
    configFile = file('config.json', owned);
  });

  it('builds the cached mode from itk3:keyMode, itk3:wrappedKeysFile and the optional settings', () => {
    const wrappedKeysFile = file(
      'wrapped.json',
      KIDS.map((kid) => record(kid)),
    );
    const { stack } = build({
      [CONTEXT.keyMode]: 'cached',
      [CONTEXT.wrappedKeysFile]: wrappedKeysFile,
      [CONTEXT.wrappingKeyArn]: EXISTING_WRAPPING_KEY_ARN,
      [CONTEXT.keyCacheTtlSeconds]: '60',
    });
    const s = new Synth(stack);
    expect(s.stack.pipeline.keyMode).toMatchObject({ mode: 'cached', wrappedKeys: wrapped, ttlSeconds: 60 });
    expect(s.env('decrypt')).toMatchObject({
      [KEY_MODE_ENV.mode]: 'cached',
      [KEY_MODE_ENV.wrappingKeyId]: EXISTING_WRAPPING_KEY_ARN,
      [KEY_MODE_ENV.ttlSeconds]: '60',
    });
    expect(JSON.parse(s.outputs().RecipientPublicJwks!.Value as string)).toEqual({ keys: jwks });
  });

  it('reads the response-signing entry (purpose response-sign) of the same file, and refuses two of them', () => {
    const signingRecord = {
      kid: SIGNING_KID,
      wrappedPrivateKey: signingBlob(),
      publicJwk: signingJwk(SIGNING_KID),
      wrappingKeyArn: EXISTING_WRAPPING_KEY_ARN,
      purpose: 'response-sign',
    };
    const withSigning = file('with-signing.json', [...KIDS.map((kid) => record(kid)), signingRecord]);
    const { stack } = build({
      [CONTEXT.keyMode]: 'cached',
      [CONTEXT.wrappedKeysFile]: withSigning,
      [CONTEXT.wrappingKeyArn]: EXISTING_WRAPPING_KEY_ARN,
    });
    expect(stack.pipeline.keyMode.wrappedKids).toEqual(new Set(KIDS));
    expect(stack.pipeline.keyMode.wrappedSigningKey).toEqual({
      kid: SIGNING_KID,
      wrappedPrivateKey: signingRecord.wrappedPrivateKey,
      publicJwk: signingRecord.publicJwk,
    });
    expect(new Synth(stack).env('deliver')[KEY_MODE_ENV.wrappingKeyId]).toBe(EXISTING_WRAPPING_KEY_ARN);

    const twice = file('two-signing.json', [
      ...KIDS.map((kid) => record(kid)),
      signingRecord,
      { ...signingRecord, kid: 'gw-response-2' },
    ]);
    expect(issuesOf(() => build({ [CONTEXT.keyMode]: 'cached', [CONTEXT.wrappedKeysFile]: twice }))).toEqual([
      `${twice}: two response-signing keys (${SIGNING_KID}, gw-response-2); keep the one for responseSigning.kid`,
    ]);
  });

  it('reads a single `keys wrap` output and comma-separated direct kids', () => {
    const single = file('one.json', record('a83627-enc-1'));
    const { stack } = build({
      [CONTEXT.keyMode]: 'cached',
      [CONTEXT.wrappedKeysFile]: single,
      [CONTEXT.directKids]: 'a83627-enc-2, b12345-enc-1',
    });
    expect([...stack.pipeline.keyMode.wrappedKids]).toEqual(['a83627-enc-1']);
    expect(stack.pipeline.keys.recipientKeys.map((k) => k.kid).sort()).toEqual([
      'a83627-enc-2',
      'b12345-enc-1',
    ]);
  });

  it('keeps the direct mode without itk3:keyMode, and refuses cached settings without it', () => {
    expect(build({}).stack.pipeline.keyMode.mode).toBe('direct');
    expect(build({ [CONTEXT.keyMode]: 'direct' }).stack.pipeline.keys.wrappingKey).toBeUndefined();
    expect(
      issuesOf(() =>
        build({ [CONTEXT.wrappedKeysFile]: 'wrapped.json', [CONTEXT.keyCacheTtlSeconds]: '60' }),
      ),
    ).toEqual([
      'itk3:wrappedKeysFile: only read with itk3:keyMode=cached',
      'itk3:keyCacheTtlSeconds: only read with itk3:keyMode=cached',
    ]);
    expect(issuesOf(() => build({ [CONTEXT.keyMode]: 'fast' }))).toEqual([
      'itk3:keyMode: must be "direct" or "cached", not "fast"',
    ]);
  });

  it('lists the problems of the wrapped-keys file and settings', () => {
    const mixed = file('mixed.json', [
      record('a83627-enc-1'),
      record('a83627-enc-2', 'arn:aws:kms:eu-west-2:123456789012:key/11111111-2222-4333-8444-555555555555'),
      { kid: 'b12345-enc-1', wrappedPrivateKey: 7, extra: true },
    ]);
    const problems = issuesOf(() =>
      build({
        [CONTEXT.keyMode]: 'cached',
        [CONTEXT.wrappedKeysFile]: mixed,
        [CONTEXT.keyCacheTtlSeconds]: '1.5',
      }),
    );
    expect(problems).toEqual([
      `${mixed}[2]: unknown field "extra"`,
      `${mixed}[2].wrappedPrivateKey: must be a non-empty string`,
      expect.stringMatching(
        /keys wrapped under 2 different keys .*; the decrypt function uses one wrapping key$/,
      ),
      'itk3:keyCacheTtlSeconds: a whole number of seconds from 1 to 86400, not "1.5"',
    ]);
    const mismatch = issuesOf(() =>
      build({
        [CONTEXT.keyMode]: 'cached',
        [CONTEXT.wrappedKeysFile]: mixed,
        [CONTEXT.wrappingKeyArn]: EXISTING_WRAPPING_KEY_ARN,
      }),
    );
    expect(mismatch).toContain(
      `${mixed}: kid a83627-enc-2 was wrapped under arn:aws:kms:eu-west-2:123456789012:key/11111111-2222-4333-8444-555555555555, not itk3:wrappingKeyArn ${EXISTING_WRAPPING_KEY_ARN}`,
    );
    expect(
      issuesOf(() =>
        build({ [CONTEXT.keyMode]: 'cached', [CONTEXT.wrappedKeysFile]: join(dir, 'absent.json') }),
      ),
    ).toEqual([expect.stringMatching(/^itk3:wrappedKeysFile: cannot read .*absent\.json \(ENOENT\)$/)]);
    expect(
      issuesOf(() =>
        build({ [CONTEXT.keyMode]: 'cached', [CONTEXT.wrappedKeysFile]: file('bad.json', '{') }),
      ),
    ).toEqual([expect.stringMatching(/bad\.json: not valid JSON$/)]);
  });

  it('makes `cdk synth` exit non-zero and list every kid without a wrapped key, before bundling', () => {
    const partial = file('partial.json', [record('a83627-enc-1')]);
    const result = spawnSync(
      'npx',
      [
        'cdk',
        'synth',
        '--quiet',
        '--no-notices',
        '-c',
        `${CONTEXT.configFile}=${configFile}`,
        '-c',
        `${CONTEXT.keyMode}=cached`,
        '-c',
        `${CONTEXT.wrappedKeysFile}=${partial}`,
        '-o',
        join(dir, 'out'),
      ],
      { cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('no wrapped key for kid "a83627-enc-2"');
    expect(result.stderr).toContain('no wrapped key for kid "b12345-enc-1"');
    expect(result.stderr).not.toContain('Bundling asset');
  });
});
