/**
 * A throw-away world for the demo, tests and benchmarks: the gateway's keys, two federated issuers,
 * three sending organisations (the senders of the NHS sample messages) and two recipients, with a
 * configuration document that ties them together. Every key is generated fresh; none is reused.
 *
 * The parties mirror the fixtures (ITK3.md §11): GP0001 sends ITK007C consultation reports; X26
 * sends ITK009D immunisations to A83627; FQ123 sends ITK013D minor-illness referrals to A8797979.
 */
import { join } from 'node:path';
import type { JWK } from 'jose';
import {
  createKeystore,
  generateKey,
  type Keystore,
  type KeystoreEntry,
  publicJwk,
} from '../adapters/local/keystore.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { PipelineConfigInput, PublicJwk } from '../config/schema.js';
import type { SigningAlg } from '../envelope/contract.js';

export const DEMO_AUDIENCE = 'https://itk3-gateway.example.nhs.uk/messages';
export const GATEWAY_ODS = 'ITK3GW';

export interface DemoIssuer {
  id: string;
  iss: string;
  /** The organisations this issuer may speak for (exact ODS codes and `PREFIX*` patterns). */
  organisations: string[];
  organisationClaim: string;
  rolesClaim?: string;
  key: KeystoreEntry;
}

export interface DemoSender {
  ods: string;
  client: string;
  meshMailbox: string;
  issuer: DemoIssuer;
  key: KeystoreEntry;
}

interface DemoRecipient {
  ods: string;
  key: KeystoreEntry;
}

export interface DemoWorld {
  keystore: Keystore;
  configDoc: PipelineConfigInput;
  config: LoadedConfig;
  issuers: Record<'nhs' | 'federation', DemoIssuer>;
  senders: Record<'GP0001' | 'X26' | 'FQ123', DemoSender>;
  recipients: Record<'A83627' | 'A8797979', DemoRecipient>;
  /** The delegated hub with a valid grant for X26 / ITK009D, and one whose grant has expired. */
  hubs: { granted: string; expired: string; ungranted: string };
  responseSigningKid: string;
  /**
   * Recipient public keys as the gateway publishes them, when the private halves are not in the
   * local keystore (emulator and deployed modes: they are in KMS). Keyed by recipient ODS.
   */
  publishedRecipientKeys?: Record<string, { key: JWK; kid: string }>;
}

export interface WorldOptions {
  /** Folder-type targets are relative paths under the runtime's base directory. */
  now?: number;
  /** Recipient RSA size: 4096 as deployed in KMS; 2048 makes tests faster. @default 4096 */
  recipientModulus?: number;
  /** Recipient key algorithm (ECDH-ES+A256KW: P-256, `recipientModulus` unused). @default 'RSA-OAEP-256' */
  recipientAlg?: 'RSA-OAEP-256' | 'ECDH-ES+A256KW';
}

/** Generate a fresh world. Takes a few seconds with RSA-4096 recipient keys. */
export async function createWorld(opts: WorldOptions = {}): Promise<DemoWorld> {
  const now = opts.now ?? Date.now();
  const modulusLength = opts.recipientModulus ?? 4096;
  const stamp = new Date(now).toISOString().slice(0, 7).replace('-', '');

  const issuerEntry = (id: string, alg: SigningAlg) =>
    generateKey('issuer-sign', alg, `${id}-${alg.toLowerCase()}-${stamp}`, id);
  const senderEntry = (ods: string, alg: SigningAlg) =>
    generateKey('sender-sign', alg, `${ods.toLowerCase()}-sign-${stamp}`, ods);
  const recipientEntry = (ods: string) =>
    generateKey(
      'recipient-decrypt',
      opts.recipientAlg ?? 'RSA-OAEP-256',
      `${ods.toLowerCase()}-enc-${stamp}`,
      ods,
      {
        modulusLength,
      },
    );

  const [nhsKey, fedKey, gpKey, x26Key, fqKey, a836Key, a879Key, responseKey] = await Promise.all([
    issuerEntry('nhs-identity', 'ES256'),
    issuerEntry('pharmacy-federation', 'PS256'),
    senderEntry('GP0001', 'ES256'),
    senderEntry('X26', 'RS512'),
    senderEntry('FQ123', 'PS256'),
    recipientEntry('A83627'),
    recipientEntry('A8797979'),
    generateKey('response-sign', 'ES256', `itk3gw-response-${stamp}`, GATEWAY_ODS),
  ]);

  const issuers = {
    nhs: {
      id: 'nhs-identity',
      iss: 'https://identity.nhs.example/itk3',
      organisations: ['GP0001'],
      organisationClaim: 'ods',
      key: nhsKey,
    },
    federation: {
      id: 'pharmacy-federation',
      iss: 'https://auth.pharmacy-federation.example',
      // Community pharmacies (F…) and the X26 dispensing service; never a GP practice.
      organisations: ['X26', 'F*'],
      organisationClaim: 'organisation.ods_code',
      rolesClaim: 'roles',
      key: fedKey,
    },
  } satisfies DemoWorld['issuers'];
  const senders = {
    GP0001: {
      ods: 'GP0001',
      client: 'gp0001-ehr',
      meshMailbox: 'MESHGP0001',
      issuer: issuers.nhs,
      key: gpKey,
    },
    X26: {
      ods: 'X26',
      client: 'x26-pharmacy-pms',
      meshMailbox: 'NOROT003',
      issuer: issuers.federation,
      key: x26Key,
    },
    FQ123: {
      ods: 'FQ123',
      client: 'fq123-pharmacy-pms',
      meshMailbox: 'NOROT003',
      issuer: issuers.federation,
      key: fqKey,
    },
  } satisfies DemoWorld['senders'];
  const recipients = {
    A83627: { ods: 'A83627', key: a836Key },
    A8797979: { ods: 'A8797979', key: a879Key },
  } satisfies DemoWorld['recipients'];
  const hubs = { granted: 'pharmacy-hub-7', expired: 'pharmacy-hub-old', ungranted: 'rogue-hub' };

  const day = 86_400_000;
  const isoDate = (t: number) => new Date(t).toISOString().slice(0, 10);

  const configDoc: PipelineConfigInput = {
    audience: DEMO_AUDIENCE,
    gatewayOds: GATEWAY_ODS,
    responseSigning: { kid: responseKey.kid },
    unauthenticatedResponseTarget: { type: 'folder', path: 'responses/_unauthenticated' },
    issuers: Object.values(issuers).map((i) => ({
      id: i.id,
      issuer: i.iss,
      organisations: [...i.organisations],
      organisationClaim: i.organisationClaim,
      ...('rolesClaim' in i ? { rolesClaim: i.rolesClaim } : {}),
      keys: [asConfigJwk(publicJwk(i.key))],
    })),
    senders: Object.values(senders).map((s) => ({
      ods: s.ods,
      clients: [{ issuer: s.issuer.id, sub: s.client }],
      meshMailbox: s.meshMailbox,
      signingKeys: [asConfigJwk(publicJwk(s.key))],
      responseTarget: { type: 'folder', path: `responses/${s.ods}` },
    })),
    recipients: Object.values(recipients).map((r) => ({
      ods: r.ods,
      keys: [{ kid: r.key.kid }],
      target: { type: 'folder', path: `delivered/${r.ods}` },
    })),
    rules: [
      {
        id: 'gp0001-send-document-consultation',
        sender: { ods: 'GP0001', clients: [{ issuer: issuers.nhs.id, sub: 'gp0001-ehr' }] },
        event: 'ITK007C',
        messageDefinition: ['ITK-GPConnectSendDocument-MessageDefinition-1'],
        recipientType: ['FA'],
        acks: { inf: true, bus: true },
        receiverAllowed: false,
        recipients: ['A83627'],
        maxBytes: 5_242_880,
      },
      {
        id: 'x26-immunisation-to-gp',
        sender: { ods: 'X26' },
        event: 'ITK009D',
        messageDefinition: ['ITK-DM-Immunization-MessageDefinition-1'],
        recipientType: ['FA'],
        recipients: ['A83627'],
      },
      {
        id: 'fq123-minor-illness-referral-to-gp',
        sender: { ods: 'FQ123' },
        event: 'ITK013D',
        messageDefinition: ['ITK-DM-MIRC-MessageDefinition-1'],
        recipients: ['A8797979'],
      },
    ],
    delegations: [
      {
        id: 'hub7-for-x26',
        actor: hubs.granted,
        issuers: [issuers.federation.id],
        onBehalfOf: ['X26'],
        events: ['ITK009D'],
        expires: isoDate(now + 120 * day),
      },
      {
        id: 'old-hub-for-x26',
        actor: hubs.expired,
        issuers: [issuers.federation.id],
        onBehalfOf: ['X26'],
        events: ['ITK009D'],
        expires: isoDate(now - 10 * day),
      },
    ],
  };

  return {
    keystore: createKeystore([nhsKey, fedKey, gpKey, x26Key, fqKey, a836Key, a879Key, responseKey]),
    configDoc,
    config: loadConfig(configDoc),
    issuers,
    senders,
    recipients,
    hubs,
    responseSigningKid: responseKey.kid,
  };
}

/** Where the embedded runtime writes for a world rooted at `baseDir`. */
export function worldPaths(baseDir: string) {
  return {
    delivered: (ods: string) => join(baseDir, 'delivered', ods),
    responses: (ods: string) => join(baseDir, 'responses', ods),
    unauthenticated: join(baseDir, 'responses', '_unauthenticated'),
  };
}

function asConfigJwk(jwk: JWK): PublicJwk {
  const { use: _use, ...rest } = jwk;
  return { ...rest, use: 'sig' } as PublicJwk;
}

/**
 * Make senders encrypt to the gateway's published recipient keys (emulator and deployed modes,
 * where the private halves live in KMS) instead of the local keystore's. `jwksByKid` maps each
 * recipient key id to its public JWK; each recipient's first configured key is the one senders use.
 */
export function publishRecipientKeys(world: DemoWorld, jwksByKid: Readonly<Record<string, JWK>>): void {
  world.publishedRecipientKeys = Object.fromEntries(
    world.config.doc.recipients.map((r) => {
      const kid = r.keys[0]!.kid;
      const key = jwksByKid[kid];
      if (!key) throw new Error(`no published key for recipient key id ${kid}`);
      return [r.ods, { key, kid }];
    }),
  );
}
