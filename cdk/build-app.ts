import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { App, type AppProps, Duration, RemovalPolicy } from 'aws-cdk-lib';
import type { RecipientPublicJwk } from '../lib/adapters/aws/deployment-names.js';
import { parseWrappedKeysFile } from '../lib/cli/keys-wrap.js';
import { loadConfigFile } from '../lib/config/load.js';
import { ConfigError } from '../lib/errors.js';
import type { KeyModeProps, WrappedSigningKey } from './constructs/key-mode.js';
import { addNagChecks } from './nag.js';
import { Itk3PipelineStack } from './pipeline-stack.js';

/** CDK context keys the app reads (`cdk synth -c itk3:configFile=…`). */
export const CONTEXT = {
  /** Path of the configuration document, relative to the working directory. */
  configFile: 'itk3:configFile',
  /** Stack name. */
  stackName: 'itk3:stackName',
  /** `retain` (default) or `destroy` — the latter for demos and emulators only. */
  removalPolicy: 'itk3:removalPolicy',
  /** `true` to name queues, tables and the bucket as in lib/infra/definitions.ts. */
  physicalNames: 'itk3:physicalNames',
  /** `direct` (default) or `cached` (docs/KEY-MODES.md). */
  keyMode: 'itk3:keyMode',
  /** Cached mode: the file `itk3 keys wrap --out` writes, relative to the working directory. */
  wrappedKeysFile: 'itk3:wrappedKeysFile',
  /** Cached mode, optional: ARN of an existing wrapping key instead of one the stack creates. */
  wrappingKeyArn: 'itk3:wrappingKeyArn',
  /** Cached mode, optional: seconds a decrypt container uses an unwrapped key (default 300). */
  keyCacheTtlSeconds: 'itk3:keyCacheTtlSeconds',
  /** Cached mode, optional: comma-separated recipient kids that stay on their RSA KMS key. */
  directKids: 'itk3:directKids',
  /** MESH poller: comma-separated mailbox ids, each polled every 5 minutes with a placeholder secret. */
  meshMailboxes: 'itk3:meshMailboxes',
  /** MESH poller: the MESH base URL (required with `itk3:meshMailboxes`). */
  meshUrl: 'itk3:meshUrl',
  /** MESH poller: whole minutes between polls of each mailbox (default 5). */
  meshScheduleMinutes: 'itk3:meshScheduleMinutes',
  /**
   * MESH poller, emulator deploys only: `true` accepts an `http://` loopback `itk3:meshUrl` (NHS
   * England's MESH sandbox beside ministack). Never set for AWS.
   */
  meshEmulatorLoopbackHttp: 'itk3:meshEmulatorLoopbackHttp',
} as const;

/** The context keys that only mean something in the cached mode. */
const CACHED_ONLY = [
  CONTEXT.wrappedKeysFile,
  CONTEXT.wrappingKeyArn,
  CONTEXT.keyCacheTtlSeconds,
  CONTEXT.directKids,
] as const;

const DEFAULT_CONFIG_FILE = 'docs/config.example.json';
const DEFAULT_STACK_NAME = 'Itk3Pipeline';

/** Options of {@link buildApp}. */
export interface BuildAppOptions {
  /**
   * Props of the `App` (tests pass `context` and `outdir`).
   * @default - from the CDK CLI environment
   */
  readonly appProps?: AppProps;
  /**
   * Register the cdk-nag packs as synth-time validation.
   * @default true
   */
  readonly nag?: boolean;
}

/**
 * The CDK app: reads the configuration document named by the `itk3:configFile` context, validates
 * it (a bad document throws a `ConfigError` listing every problem before anything is built), and
 * builds the pipeline stack with the cdk-nag packs attached.
 *
 * @example
 * ```ts
 * const { app } = buildApp({ appProps: { context: { 'itk3:configFile': 'my-config.json' } } });
 * app.synth();
 * ```
 */
export function buildApp(options: BuildAppOptions = {}): { app: App; stack: Itk3PipelineStack } {
  const app = new App(options.appProps);
  const context = (key: string): string | undefined => {
    const value: unknown = app.node.tryGetContext(key);
    return value === undefined || value === null ? undefined : String(value);
  };

  const configPath = resolve(context(CONTEXT.configFile) ?? DEFAULT_CONFIG_FILE);
  const config = loadConfigFile(configPath);

  const removal = (context(CONTEXT.removalPolicy) ?? 'retain').toLowerCase();
  if (removal !== 'retain' && removal !== 'destroy') {
    throw new Error(`${CONTEXT.removalPolicy} must be "retain" or "destroy", got "${removal}"`);
  }

  const keyMode = keyModeFromContext(context);
  const mesh = meshFromContext(context);

  const stack = new Itk3PipelineStack(app, context(CONTEXT.stackName) ?? DEFAULT_STACK_NAME, {
    description: 'ITK3 secure pipeline: authenticate, authorise, decrypt, verify, deliver (keys in KMS)',
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
    config: config.doc,
    removalPolicy: removal === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
    physicalNames: context(CONTEXT.physicalNames) === 'true',
    ...(keyMode ? { keyMode } : {}),
    ...(mesh ? { mesh } : {}),
  });

  if (options.nag ?? true) addNagChecks(app);
  return { app, stack };
}

/**
 * The key mode from the `itk3:keyMode` context and, in the cached mode, the wrapped-keys file and
 * the optional wrapping key, TTL and direct kids. `undefined` for the direct mode, so its stack is
 * exactly the stack built without a key mode. Problems the file itself can reveal are collected
 * here and thrown together; the construct then checks the rest (every kid wrapped, base64, JWKs).
 *
 * @throws {ConfigError} listing every problem
 */
function keyModeFromContext(context: (key: string) => string | undefined): KeyModeProps | undefined {
  const problems: string[] = [];
  const mode = (context(CONTEXT.keyMode) ?? 'direct').toLowerCase();
  if (mode !== 'direct' && mode !== 'cached') {
    throw new ConfigError([`${CONTEXT.keyMode}: must be "direct" or "cached", not "${mode}"`]);
  }
  if (mode === 'direct') {
    // A cached-mode setting without the mode is a deployment that believes it is cached: say so.
    for (const key of CACHED_ONLY) {
      if (context(key) !== undefined) problems.push(`${key}: only read with ${CONTEXT.keyMode}=cached`);
    }
    if (problems.length > 0) throw new ConfigError(problems);
    return undefined;
  }

  const wrappedKeys: Record<string, string> = {};
  const publicJwks: RecipientPublicJwk[] = [];
  let wrappedSigningKey: WrappedSigningKey | undefined;
  const wrappingKeyArn = context(CONTEXT.wrappingKeyArn);
  const file = context(CONTEXT.wrappedKeysFile);
  if (file !== undefined) {
    const path = resolve(file);
    let text: string | undefined;
    try {
      text = readFileSync(path, 'utf8');
    } catch (cause) {
      problems.push(
        `${CONTEXT.wrappedKeysFile}: cannot read ${path} (${(cause as NodeJS.ErrnoException).code})`,
      );
    }
    if (text !== undefined) {
      const parsed = parseWrappedKeysFile(text, file);
      problems.push(...parsed.problems);
      const wrappedUnder = new Set<string>();
      for (const entry of parsed.entries) {
        if (entry.purpose === 'response-sign') {
          // The deliver stage signs with one kid (responseSigning.kid): one signing entry at most.
          if (wrappedSigningKey !== undefined) {
            problems.push(
              `${file}: two response-signing keys (${wrappedSigningKey.kid}, ${entry.kid}); keep the one for responseSigning.kid`,
            );
          }
          wrappedSigningKey = {
            kid: entry.kid,
            wrappedPrivateKey: entry.wrappedPrivateKey,
            publicJwk: entry.publicJwk as unknown as WrappedSigningKey['publicJwk'],
          };
        } else {
          wrappedKeys[entry.kid] = entry.wrappedPrivateKey;
          if (entry.publicJwk) publicJwks.push(entry.publicJwk as unknown as RecipientPublicJwk);
        }
        if (entry.wrappingKeyArn === undefined) continue;
        wrappedUnder.add(entry.wrappingKeyArn);
        // Caught here rather than as dead letters: the function names one key in every Decrypt.
        if (wrappingKeyArn !== undefined && entry.wrappingKeyArn !== wrappingKeyArn) {
          problems.push(
            `${file}: kid ${entry.kid} was wrapped under ${entry.wrappingKeyArn}, not ${CONTEXT.wrappingKeyArn} ${wrappingKeyArn}`,
          );
        }
      }
      if (wrappingKeyArn === undefined && wrappedUnder.size > 1) {
        problems.push(
          `${file}: keys wrapped under ${wrappedUnder.size} different keys (${[...wrappedUnder].join(', ')}); the decrypt function uses one wrapping key`,
        );
      }
    }
  }

  const ttlText = context(CONTEXT.keyCacheTtlSeconds);
  const ttl = ttlText === undefined ? undefined : Number(ttlText);
  if (ttl !== undefined && !(Number.isInteger(ttl) && ttl >= 1 && ttl <= 86_400)) {
    problems.push(
      `${CONTEXT.keyCacheTtlSeconds}: a whole number of seconds from 1 to 86400, not "${ttlText}"`,
    );
  }
  const directKids = (context(CONTEXT.directKids) ?? '')
    .split(',')
    .map((kid) => kid.trim())
    .filter((kid) => kid !== '');

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    mode: 'cached',
    wrappedKeys,
    ...(publicJwks.length > 0 ? { publicJwks } : {}),
    ...(wrappedSigningKey ? { wrappedSigningKey } : {}),
    ...(wrappingKeyArn !== undefined ? { wrappingKeyArn } : {}),
    ...(ttl !== undefined ? { cacheTtl: Duration.seconds(ttl) } : {}),
    ...(directKids.length > 0 ? { directKids } : {}),
  };
}

/**
 * The MESH poller from `itk3:meshUrl` and `itk3:meshMailboxes` (comma-separated ids): the simple
 * case of one placeholder secret and a 5-minute schedule per mailbox. Schedules, imported secrets,
 * a CA bundle or limits need the construct's `mesh` prop (docs/DEPLOY.md, "MESH poller").
 *
 * @throws {ConfigError} when only one of the two is given
 */
export function meshFromContext(
  context: (key: string) => string | undefined,
):
  | { url: string; mailboxes: { mailboxId: string; schedule?: Duration }[]; emulatorLoopbackHttp?: boolean }
  | undefined {
  const url = context(CONTEXT.meshUrl);
  const mailboxes = (context(CONTEXT.meshMailboxes) ?? '')
    .split(',')
    .map((m) => m.trim())
    .filter((m) => m !== '');
  if (url === undefined && mailboxes.length === 0) return undefined;
  if (url === undefined)
    throw new ConfigError([`${CONTEXT.meshUrl}: required with ${CONTEXT.meshMailboxes}`]);
  if (mailboxes.length === 0) {
    throw new ConfigError([`${CONTEXT.meshMailboxes}: give at least one mailbox id with ${CONTEXT.meshUrl}`]);
  }
  const minutesText = context(CONTEXT.meshScheduleMinutes);
  const minutes = minutesText === undefined ? undefined : Number(minutesText);
  if (minutes !== undefined && !(Number.isInteger(minutes) && minutes >= 1)) {
    throw new ConfigError([
      `${CONTEXT.meshScheduleMinutes}: whole minutes, at least 1 (got "${minutesText}")`,
    ]);
  }
  const loopback = context(CONTEXT.meshEmulatorLoopbackHttp);
  if (loopback !== undefined && loopback !== 'true' && loopback !== 'false') {
    throw new ConfigError([`${CONTEXT.meshEmulatorLoopbackHttp}: "true" or "false" (got "${loopback}")`]);
  }
  return {
    url,
    mailboxes: mailboxes.map((mailboxId) => ({
      mailboxId,
      ...(minutes !== undefined ? { schedule: Duration.minutes(minutes) } : {}),
    })),
    ...(loopback === 'true' ? { emulatorLoopbackHttp: true } : {}),
  };
}
