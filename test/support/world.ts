/**
 * Shared factories for the pipeline tests: one demo world per test file (fresh keys, RSA-2048
 * recipients for speed), ITK3 messages with the header variations a test needs, sealing as any
 * sender to any key, temporary folders, and verification of the gateway's signed responses.
 *
 * Everything is real: real keys, real JOSE, the real ITK3 builder and parser. Nothing here stands
 * in for a component of the pipeline.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compactVerify, importJWK } from 'jose';
import { findKey, publicJwk } from '../../lib/adapters/local/keystore.js';
import {
  SoftwareKeyService,
  type SoftwareKeyServiceOptions,
} from '../../lib/adapters/local/software-keys.js';
import { type LoadedConfig, loadConfig } from '../../lib/config/load.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import type { ItkRouting } from '../../lib/envelope/routing.js';
import { encryptSigned, signBundle } from '../../lib/envelope/seal.js';
import { type BuildOptions, buildItk3Message, type Itk3Message, parseBundle } from '../../lib/itk3/index.js';
import { type EmbeddedOptions, EmbeddedPipeline } from '../../lib/runtime/embedded.js';
import { recipientKeyFor, sealFor, signerFor, tokenFor } from '../../lib/testkit/scenario.js';
import { createWorld, type DemoSender, type DemoWorld } from '../../lib/testkit/world.js';

export type SenderOds = 'GP0001' | 'X26' | 'FQ123';
export type RecipientOds = 'A83627' | 'A8797979';

let cached: Promise<DemoWorld> | undefined;

/** The world of this test file (vitest runs each file in its own process, so one per file). */
export function testWorld(): Promise<DemoWorld> {
  cached ??= createWorld({ recipientModulus: 2048 });
  return cached;
}

/** The world's configuration document with some parts replaced, validated. */
export function configWith(world: DemoWorld, changes: Partial<PipelineConfigInput>): LoadedConfig {
  return loadConfig({ ...structuredClone(world.configDoc), ...changes });
}

/** The world's configuration with some limits changed. */
export function configWithLimits(
  world: DemoWorld,
  limits: NonNullable<PipelineConfigInput['limits']>,
): LoadedConfig {
  return configWith(world, { limits: { ...world.configDoc.limits, ...limits } });
}

const tempDirs: string[] = [];

/** A fresh temporary folder, removed by {@link removeTempDirs}. */
export function makeTempDir(prefix = 'itk3-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Files (not folders) directly in `dir`, sorted; empty when the folder does not exist. */
export function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((f) => statSync(join(dir, f)).isFile())
      .sort();
  } catch {
    return [];
  }
}

/**
 * Delivered Bundles in `dir` as `<MessageHeader id>.<ext>`, sorted: delivery names are
 * `<sender>_<MessageHeader id>_<trace id>.<ext>` (unique per sender and trace, issue 9).
 */
export function deliveredIds(dir: string): string[] {
  return filesIn(dir)
    .map((f) => {
      const match = /^[A-Za-z0-9.-]+_([A-Za-z0-9.-]+)_[A-Za-z0-9.-]+\.(xml|json)$/.exec(f);
      return match ? `${match[1]}.${match[2]}` : f;
    })
    .sort();
}

/** The one delivered file in `dir` carrying MessageHeader id `messageId` (full path). */
export function deliveredFile(dir: string, messageId: string): string {
  const matches = filesIn(dir).filter((f) => f.split('_')[1] === messageId);
  if (matches.length !== 1) throw new Error(`expected one delivery of ${messageId}, found ${matches.length}`);
  return join(dir, matches[0]!);
}

/** Every file below `dir`, as paths relative to it. */
export function filesBelow(dir: string, prefix = ''): string[] {
  let names: string[];
  try {
    names = readdirSync(join(dir, prefix));
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const rel = prefix ? join(prefix, name) : name;
    return statSync(join(dir, rel)).isDirectory() ? filesBelow(dir, rel) : [rel];
  });
}

/** What each demo sender sends, by default, and to whom (matches the world's policy rules). */
const SENDER_DEFAULTS: Record<
  SenderOds,
  { to: RecipientOds; options: Omit<BuildOptions, 'format' | 'messageId' | 'bundleId' | 'documentId'> }
> = {
  GP0001: {
    to: 'A83627',
    options: {
      event: 'ITK007C',
      senderOds: 'GP0001',
      meshMailbox: 'MESHGP0001',
      acks: { inf: true, bus: true },
      recipientType: 'FA',
      messageDefinition: 'ITK-GPConnectSendDocument-MessageDefinition-1',
      timestamp: '2025-01-15T10:30:00+00:00',
    },
  },
  X26: {
    to: 'A83627',
    options: {
      event: 'ITK009D',
      senderOds: 'X26',
      receiverOds: 'A83627',
      meshMailbox: 'NOROT003',
      acks: { inf: true, bus: true },
      recipientType: 'FA',
      messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
      timestamp: '2025-01-15T10:30:00+00:00',
    },
  },
  FQ123: {
    to: 'A8797979',
    options: {
      event: 'ITK013D',
      senderOds: 'FQ123',
      receiverOds: 'A8797979',
      meshMailbox: 'NOROT003',
      acks: { inf: true, bus: true },
      recipientType: 'FA',
      messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1',
      timestamp: '2025-01-15T10:30:00+00:00',
    },
  },
};

export interface BuiltMessage {
  bytes: Uint8Array;
  format: 'xml' | 'json';
  /** The routing header the registered sender would put on it. */
  routing: ItkRouting;
  messageId: string;
  documentId: string;
}

/**
 * A valid ITK3 message from `sender` under the world's policy, with fresh ids; `overrides` change
 * the header (the routing keeps the registered sender, so a test can make them disagree).
 */
export function buildMessage(
  sender: SenderOds,
  overrides: Partial<BuildOptions> & { to?: string } = {},
): BuiltMessage {
  const defaults = SENDER_DEFAULTS[sender];
  const { to = defaults.to, ...rest } = overrides;
  const options: BuildOptions = {
    ...defaults.options,
    format: 'xml',
    messageId: randomUUID(),
    bundleId: randomUUID(),
    documentId: randomUUID(),
    ...rest,
  };
  return {
    bytes: buildItk3Message(options),
    format: options.format,
    routing: { from: sender, to, event: options.event, id: options.messageId },
    messageId: options.messageId,
    documentId: options.documentId,
  };
}

/** The signing identity of a demo sender, for `signBundle`. */
export function signerOf(world: DemoWorld, ods: SenderOds) {
  return signerFor(world.senders[ods]);
}

/** The inner JWS a correct `ods` makes over `msg`: its exact bytes, its routing header. */
export function signAs(
  world: DemoWorld,
  ods: SenderOds,
  msg: Pick<BuiltMessage, 'bytes' | 'format' | 'routing'>,
): Promise<string> {
  return signBundle({
    bundle: msg.bytes,
    format: msg.format,
    routing: msg.routing,
    signer: signerOf(world, ods),
  });
}

/** The public encryption key of a demo recipient, for `encryptSigned`. */
export function recipientOf(world: DemoWorld, ods: RecipientOds) {
  return recipientKeyFor(world, ods);
}

/** Sign as `sender` and seal to the recipient in `msg.routing.to`, as a correct sender does. */
export function sealAs(world: DemoWorld, sender: SenderOds, msg: BuiltMessage): Promise<string> {
  return sealFor(world, world.senders[sender], msg.bytes, msg.format, msg.routing);
}

/** Sign with any sender's key and encrypt to any key id: for envelopes that disagree with themselves. */
export async function sealCustom(
  world: DemoWorld,
  msg: BuiltMessage,
  opts: { signer: SenderOds; recipientKey: RecipientOds; kid?: string; jweRouting?: ItkRouting },
): Promise<string> {
  const jws = await signAs(world, opts.signer, msg);
  const recipient = recipientOf(world, opts.recipientKey);
  return encryptSigned({
    plaintext: jws,
    routing: opts.jweRouting ?? msg.routing,
    recipient: { key: recipient.key, kid: opts.kid ?? recipient.kid },
  });
}

/** A credential for a demo sender (or one claiming another organisation through `claims`). */
export function credentialFor(
  world: DemoWorld,
  sender: SenderOds,
  now: number,
  opts: Parameters<typeof tokenFor>[3] = {},
): Promise<string> {
  return tokenFor(world, world.senders[sender] as DemoSender, now, opts);
}

/** A software key service over the world's keystore, optionally with a fault-injection hook. */
export function keyService(world: DemoWorld, options: SoftwareKeyServiceOptions = {}): SoftwareKeyService {
  return new SoftwareKeyService(world.keystore, options);
}

/** An embedded pipeline over the world (virtual clock, deployed handlers) writing under `baseDir`. */
export function embeddedPipeline(
  world: DemoWorld,
  opts: Partial<EmbeddedOptions> & { baseDir: string },
): EmbeddedPipeline {
  return new EmbeddedPipeline({ config: world.config, keys: keyService(world), ...opts });
}

/** Seal `msg` as `sender`, mint its credential and submit it through the front door. */
export async function submitMessage(
  pipeline: EmbeddedPipeline,
  world: DemoWorld,
  sender: SenderOds,
  msg: BuiltMessage,
): Promise<string> {
  const credential = await credentialFor(world, sender, pipeline.clock.now());
  const result = await pipeline.submit(credential, await sealAs(world, sender, msg));
  if (result.status !== 202) throw new Error(`front door refused the message: ${result.error}`);
  return result.trackingId;
}

/**
 * Verify a response JWS with the response-signing public key from the keystore and parse its
 * payload as an ITK3 Bundle.
 */
export async function verifyResponse(
  world: DemoWorld,
  jws: string,
): Promise<{ message: Itk3Message; header: Record<string, unknown> }> {
  const entry = findKey(world.keystore, world.responseSigningKid);
  if (!entry) throw new Error('the world has no response-signing key');
  const key = await importJWK(publicJwk(entry), 'ES256');
  const { payload, protectedHeader } = await compactVerify(jws.trim(), key, { algorithms: ['ES256'] });
  const format = protectedHeader.cty === 'fhir+json' ? 'json' : 'xml';
  return { message: parseBundle(payload, format), header: protectedHeader as Record<string, unknown> };
}
