/**
 * The demo scenario: every ITK3 sample sealed by its real sender, plus a set of hostile messages,
 * each with the outcome a correct pipeline must give it. Used by `itk3 demo`, the end-to-end tests
 * and the load benchmark, so all three exercise the same messages.
 */
import { randomUUID } from 'node:crypto';
import type { JWK } from 'jose';
import { generateKey, publicJwk } from '../adapters/local/keystore.js';
import type { ItkRouting } from '../envelope/routing.js';
import { encryptSigned, type SignerKey, sealMessage, signBundle } from '../envelope/seal.js';
import { mintToken } from '../envelope/token.js';
import { Itk3ValidationError } from '../errors.js';
import {
  buildItk3Message,
  type Itk3Message,
  loadSamples,
  parseBundle,
  type UnresolvedReferencePolicy,
  validateItk3,
} from '../itk3/index.js';
import type { DemoSender, DemoWorld } from './world.js';

interface Expected {
  status: 'delivered' | 'rejected';
  stage?: string;
  itk3Code?: string;
  code?: string;
}

export interface ScenarioMessage {
  name: string;
  kind: 'sample' | 'hostile';
  description: string;
  credential?: string;
  sealed: string;
  /** Send straight onto the inbound queue (SQS ingestion) instead of through the front door. */
  direct?: boolean;
  /** Sent after every earlier phase has finished (a replay comes after the original). @default 1 */
  phase?: number;
  /** The routing header the envelope carries (unauthenticated until verify). */
  routing?: ItkRouting;
  /** The Bundle bytes a correct pipeline delivers, for messages expected to be delivered. */
  bundle?: Uint8Array;
  expected: Expected;
}

const TOKEN_CLOCK_SKEW_MS = 0;

/** Mint a credential for `sender` through its issuer, as a partner's token service would. */
export async function tokenFor(
  world: DemoWorld,
  sender: DemoSender,
  now: number,
  opts: {
    actors?: string[];
    iat?: number;
    exp?: number;
    jti?: string;
    claims?: Record<string, unknown>;
  } = {},
): Promise<string> {
  const issuer = sender.issuer;
  return mintToken({
    key: issuer.key.privateJwk,
    kid: issuer.key.kid,
    alg: issuer.key.alg as 'ES256' | 'PS256' | 'RS512',
    iss: issuer.iss,
    sub: sender.client,
    aud: world.config.doc.audience,
    organisation: sender.ods,
    organisationClaim: issuer.organisationClaim,
    ...(issuer.rolesClaim ? { rolesClaim: issuer.rolesClaim, roles: ['itk3-sender'] } : {}),
    nowMs: now + TOKEN_CLOCK_SKEW_MS,
    ...(opts.actors ? { actors: opts.actors } : {}),
    ...(opts.iat !== undefined ? { iat: opts.iat } : {}),
    ...(opts.exp !== undefined ? { exp: opts.exp } : {}),
    ...(opts.jti ? { jti: opts.jti } : {}),
    ...(opts.claims ? { claims: opts.claims } : {}),
  });
}

/** Sign and encrypt `bundle` from `sender` to the recipient named in `routing.to`. */
export async function sealFor(
  world: DemoWorld,
  sender: DemoSender,
  bundle: Uint8Array,
  format: 'xml' | 'json',
  routing: ItkRouting,
): Promise<string> {
  const recipient = recipientKeyFor(world, routing.to);
  return sealMessage({
    bundle,
    format,
    routing,
    signer: signerFor(sender),
    recipient,
  });
}

/** A sender's signing identity, as `signBundle` and `sealMessage` take it. */
export function signerFor(sender: Pick<DemoSender, 'key'>): SignerKey {
  return { key: sender.key.privateJwk, kid: sender.key.kid, alg: sender.key.alg as SignerKey['alg'] };
}

/** The routing header a sender derives from its own message. */
export function routingFor(msg: Itk3Message, defaultRecipient: string): ItkRouting {
  return {
    from: msg.header.senderOds ?? 'UNKNOWN',
    to: msg.header.receiverOds ?? defaultRecipient,
    event: msg.header.event.code,
    id: msg.header.id,
  };
}

/**
 * All sample messages (fixtures when `../shared` is there, built equivalents otherwise) followed by
 * the hostile set. The legacy ITK 2.x files are sealed by a real sender and must come back 10009.
 */
export async function buildScenario(world: DemoWorld, now: number): Promise<ScenarioMessage[]> {
  const out: ScenarioMessage[] = [];
  const samples = loadSamples();
  const seenIds = new Set<string>();

  for (const sample of samples) {
    if (sample.kind === 'legacy-itk2') {
      const sender = world.senders.GP0001;
      const routing = { from: sender.ods, to: 'A83627', event: 'ITK007C', id: randomUUID() };
      out.push({
        name: sample.name,
        kind: 'sample',
        description: 'legacy ITK 2.x message sealed by a registered sender',
        credential: await tokenFor(world, sender, now),
        sealed: await sealFor(world, sender, sample.bytes, sample.format, routing),
        routing,
        expected: { status: 'rejected', stage: 'verify', itk3Code: '10009', code: 'BUNDLE_NOT_ITK3' },
      });
      continue;
    }
    const msg = parseBundle(sample.bytes, sample.format);
    const sender = world.senders[msg.header.senderOds as keyof DemoWorld['senders']];
    if (!sender) throw new Error(`sample ${sample.name} has a sender the demo world does not know`);
    const rule = world.config.doc.rules.find(
      (r) => r.sender.ods === sender.ods && r.event === msg.header.event.code,
    );
    const routing = routingFor(msg, rule?.recipients[0] ?? 'A83627');
    const duplicate = seenIds.has(msg.header.id);
    seenIds.add(msg.header.id);
    // engage_jack_smith_mirc.xml references a receiver and a focus that are not in its Bundle: under
    // the default rule setting (unresolvedReferences: refuse) a correct pipeline refuses it, 20006.
    if (danglingUnder(msg, rule?.unresolvedReferences ?? 'refuse')) {
      out.push({
        name: sample.name,
        kind: 'sample',
        description: `${msg.header.event.code} ${sender.ods}, dangling receiver/focus refs`,
        credential: await tokenFor(world, sender, now),
        sealed: await sealFor(world, sender, sample.bytes, sample.format, routing),
        routing,
        expected: { status: 'rejected', stage: 'verify', itk3Code: '20006', code: 'REFERENCE_UNRESOLVED' },
      });
      continue;
    }
    out.push({
      name: sample.name,
      kind: 'sample',
      description: duplicate
        ? `${msg.header.event.code} reusing an earlier MessageHeader id`
        : `${msg.header.event.code} ${sender.ods} → ${routing.to}`,
      credential: await tokenFor(world, sender, now),
      sealed: await sealFor(world, sender, sample.bytes, sample.format, routing),
      routing,
      // A duplicate arrives after its original has been processed, never in the same batch: two
      // copies racing through one batch would make "which one is the duplicate" a coin toss.
      ...(duplicate ? { phase: 2 } : { bundle: sample.bytes }),
      expected: duplicate
        ? { status: 'rejected', stage: 'verify', itk3Code: '20007', code: 'DUPLICATE_MESSAGE' }
        : { status: 'delivered' },
    });
  }

  out.push(...(await hostileMessages(world, now)));
  return out;
}

/** True when the sample's references do not resolve and the rule refuses that. */
function danglingUnder(msg: Itk3Message, policy: UnresolvedReferencePolicy): boolean {
  try {
    validateItk3(msg, { unresolvedReferences: policy });
    return false;
  } catch (error) {
    return error instanceof Itk3ValidationError && error.code === 'REFERENCE_UNRESOLVED';
  }
}

/** A fresh, valid X26 → A83627 immunisation message (built, so ids never collide). */
export function freshImmunisation(
  opts: {
    messageId?: string;
    format?: 'xml' | 'json';
    attachmentBytes?: number;
    /** Size the whole Bundle to about this many bytes (benchmarks). */
    targetBytes?: number;
    /** InfAckRequested and BusAckRequested. @default true */
    acks?: boolean;
  } = {},
): {
  bytes: Uint8Array;
  routing: ItkRouting;
  format: 'xml' | 'json';
} {
  const messageId = opts.messageId ?? randomUUID();
  const format = opts.format ?? 'xml';
  const acks = opts.acks ?? true;
  const bytes = buildItk3Message({
    format,
    event: 'ITK009D',
    senderOds: 'X26',
    receiverOds: 'A83627',
    meshMailbox: 'NOROT003',
    messageId,
    bundleId: randomUUID(),
    documentId: randomUUID(),
    acks: { inf: acks, bus: acks },
    recipientType: 'FA',
    messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
    timestamp: new Date().toISOString(),
    ...(opts.attachmentBytes ? { attachmentBytes: opts.attachmentBytes } : {}),
    ...(opts.targetBytes ? { targetBytes: opts.targetBytes } : {}),
  });
  return { bytes, format, routing: { from: 'X26', to: 'A83627', event: 'ITK009D', id: messageId } };
}

/** The hostile set of the demo: one per attack class named in the core issue, and a few more. */
export async function hostileMessages(world: DemoWorld, now: number): Promise<ScenarioMessage[]> {
  const x26 = world.senders.X26;
  const fq = world.senders.FQ123;
  const out: ScenarioMessage[] = [];
  const add = (m: ScenarioMessage) => out.push(m);
  const signer = signerFor;
  const recipient = recipientKeyFor(world, 'A83627');
  /** A fresh, correctly sealed X26 message presented with the credential `token` describes. */
  const x26Message = async (
    name: string,
    description: string,
    token: Parameters<typeof tokenFor>[3],
    expected: Expected,
  ): Promise<ScenarioMessage> => {
    const m = freshImmunisation();
    return {
      name,
      kind: 'hostile',
      description,
      credential: await tokenFor(world, x26, now, token),
      sealed: await sealFor(world, x26, m.bytes, m.format, m.routing),
      routing: m.routing,
      ...(expected.status === 'delivered' ? { bundle: m.bytes } : {}),
      expected,
    };
  };
  const denied = (stage: string, code: string): Expected => ({
    status: 'rejected',
    stage,
    itk3Code: '20012',
    code,
  });

  // A valid delegated message: the hub holds an unexpired grant for X26 / ITK009D.
  add(
    await x26Message(
      'delegated-by-granted-hub',
      'pharmacy hub acting for X26 with a valid grant (allowed)',
      { actors: [world.hubs.granted] },
      { status: 'delivered' },
    ),
  );
  // Bad signature: the JWS is signed by an attacker's key under the sender's kid.
  {
    const m = freshImmunisation();
    const attacker = await generateKey('sender-sign', 'RS512', x26.key.kid, 'X26');
    const jws = await signBundle({
      bundle: m.bytes,
      format: m.format,
      routing: m.routing,
      signer: signer({ ...x26, key: attacker }),
    });
    add({
      name: 'bad-signature',
      kind: 'hostile',
      description: 'inner JWS signed by a key that is not the sender’s',
      credential: await tokenFor(world, x26, now),
      sealed: await encryptSigned({ plaintext: jws, routing: m.routing, recipient }),
      expected: { status: 'rejected', stage: 'verify', itk3Code: '20012', code: 'SIGNATURE_INVALID' },
    });
  }
  // Wrong recipient: routed to an organisation this gateway does not serve.
  {
    const m = freshImmunisation();
    const routing = { ...m.routing, to: 'B99999' };
    const jws = await signBundle({ bundle: m.bytes, format: m.format, routing, signer: signer(x26) });
    add({
      name: 'wrong-recipient',
      kind: 'hostile',
      description: 'addressed to an organisation not served here',
      credential: await tokenFor(world, x26, now),
      sealed: await encryptSigned({ plaintext: jws, routing, recipient }),
      expected: { status: 'rejected', stage: 'authorise', itk3Code: '20002', code: 'RECIPIENT_UNKNOWN' },
    });
  }
  // Replayed token: the credential of an accepted message presented again with another message.
  {
    const first = freshImmunisation();
    const second = freshImmunisation();
    const token = await tokenFor(world, x26, now);
    add({
      name: 'replay-original',
      kind: 'hostile',
      description: 'first use of a credential (allowed)',
      credential: token,
      sealed: await sealFor(world, x26, first.bytes, first.format, first.routing),
      routing: first.routing,
      bundle: first.bytes,
      expected: { status: 'delivered' },
    });
    add({
      name: 'replayed-token',
      kind: 'hostile',
      description: 'the same credential (same jti) presented again',
      credential: token,
      sealed: await sealFor(world, x26, second.bytes, second.format, second.routing),
      phase: 2,
      expected: { status: 'rejected', stage: 'authenticate', itk3Code: '20012', code: 'TOKEN_REPLAYED' },
    });
  }
  // Expired token, straight onto the inbound queue: the HTTP front door refuses it with a 401
  // before anything is stored, so the authenticate stage is shown deciding it on the SQS path.
  const iat = Math.floor(now / 1000) - 900;
  add({
    ...(await x26Message(
      'expired-token',
      'credential expired ten minutes before receipt',
      { iat, exp: iat + 300 },
      denied('authenticate', 'TOKEN_EXPIRED'),
    )),
    direct: true,
  });
  // Unauthorised sender: authenticated, but no rule lets X26 send ITK013D to A8797979.
  {
    const id = randomUUID();
    const bytes = buildItk3Message({
      format: 'xml',
      event: 'ITK013D',
      senderOds: 'X26',
      receiverOds: 'A8797979',
      meshMailbox: 'NOROT003',
      messageId: id,
      bundleId: randomUUID(),
      documentId: randomUUID(),
      acks: { inf: true, bus: true },
      recipientType: 'FA',
      messageDefinition: 'ITK-DM-MIRC-MessageDefinition-1',
      timestamp: new Date(now).toISOString(),
    });
    const routing = { from: 'X26', to: 'A8797979', event: 'ITK013D', id };
    add({
      name: 'unauthorised-sender',
      kind: 'hostile',
      description: 'X26 sending an event no rule allows it',
      credential: await tokenFor(world, x26, now),
      sealed: await sealFor(world, x26, bytes, 'xml', routing),
      expected: { status: 'rejected', stage: 'authorise', itk3Code: '20012', code: 'POLICY_DENIED' },
    });
  }
  // Delegation without a grant, and under an expired one.
  add(
    await x26Message(
      'delegation-without-grant',
      'a hub with no grant acting for X26',
      { actors: [world.hubs.ungranted] },
      denied('authorise', 'DELEGATION_NOT_GRANTED'),
    ),
  );
  add(
    await x26Message(
      'delegation-expired-grant',
      'a hub whose grant expired ten days ago',
      { actors: [world.hubs.expired] },
      denied('authorise', 'DELEGATION_GRANT_EXPIRED'),
    ),
  );
  // Tampered ciphertext: one base64url character of the ciphertext changed.
  {
    const m = freshImmunisation();
    const sealed = await sealFor(world, x26, m.bytes, m.format, m.routing);
    const parts = sealed.split('.');
    const ct = parts[3]!;
    const i = Math.floor(ct.length / 2);
    parts[3] = `${ct.slice(0, i)}${ct[i] === 'A' ? 'B' : 'A'}${ct.slice(i + 1)}`;
    add({
      name: 'tampered-ciphertext',
      kind: 'hostile',
      description: 'one character of the JWE ciphertext changed in transit',
      credential: await tokenFor(world, x26, now),
      sealed: parts.join('.'),
      expected: { status: 'rejected', stage: 'decrypt', itk3Code: '10009', code: 'DECRYPT_FAILED' },
    });
  }
  // Swapped routing header: the JWE claims another message id than the signed JWS.
  {
    const m = freshImmunisation();
    const jws = await signBundle({
      bundle: m.bytes,
      format: m.format,
      routing: m.routing,
      signer: signer(x26),
    });
    add({
      name: 'swapped-routing-header',
      kind: 'hostile',
      description: 'JWE routing header differs from the signed one',
      credential: await tokenFor(world, x26, now),
      sealed: await encryptSigned({ plaintext: jws, routing: { ...m.routing, id: randomUUID() }, recipient }),
      expected: { status: 'rejected', stage: 'verify', itk3Code: '20012', code: 'BINDING_MISMATCH' },
    });
  }
  // Signature stripping: encrypt-only content to our public key, no inner JWS.
  {
    const m = freshImmunisation();
    add({
      name: 'signature-stripped',
      kind: 'hostile',
      description: 'Bundle encrypted to our public key with no inner signature',
      credential: await tokenFor(world, x26, now),
      sealed: await encryptSigned({ plaintext: m.bytes, routing: m.routing, recipient }),
      expected: { status: 'rejected', stage: 'verify', itk3Code: '20012', code: 'SIGNATURE_MALFORMED' },
    });
  }
  // Cross-organisation: FQ123's credential used to send a message routed as from X26.
  {
    const m = freshImmunisation();
    add({
      name: 'credential-for-another-org',
      kind: 'hostile',
      description: 'FQ123 credential presenting a message routed from X26',
      credential: await tokenFor(world, fq, now),
      sealed: await sealFor(world, x26, m.bytes, m.format, m.routing),
      expected: {
        status: 'rejected',
        stage: 'authorise',
        itk3Code: '20012',
        code: 'ROUTING_SENDER_MISMATCH',
      },
    });
  }
  // Federation scope: the pharmacy federation is trusted, but not for GP practices. It mints a
  // credential for GP0001 (naming GP0001's own client id) around a message that quotes a real-looking
  // GP0001 message id; it is refused before any principal exists, so nothing reaches GP0001.
  {
    const id = randomUUID();
    const bytes = buildItk3Message({
      format: 'xml',
      event: 'ITK007C',
      senderOds: 'GP0001',
      meshMailbox: 'MESHGP0001',
      messageId: id,
      bundleId: randomUUID(),
      documentId: randomUUID(),
      acks: { inf: true, bus: true },
      recipientType: 'FA',
      messageDefinition: 'ITK-GPConnectSendDocument-MessageDefinition-1',
      timestamp: new Date(now).toISOString(),
    });
    const routing = { from: 'GP0001', to: 'A83627', event: 'ITK007C', id };
    const outOfScope = { ...world.senders.GP0001, issuer: world.issuers.federation };
    add({
      name: 'issuer-out-of-scope',
      kind: 'hostile',
      description: 'a credential from a trusted issuer for an organisation outside its scope',
      credential: await tokenFor(world, outOfScope, now),
      sealed: await sealFor(world, x26, bytes, 'xml', routing),
      // The HTTP front door refuses it with a 401; on the SQS path the stage shows its own code.
      direct: true,
      expected: denied('authenticate', 'TOKEN_ORGANISATION_OUT_OF_SCOPE'),
    });
  }
  // No credential at all, sent straight onto the inbound queue.
  {
    const m = freshImmunisation();
    add({
      name: 'no-credential',
      kind: 'hostile',
      description: 'sealed message on the inbound queue without a credential',
      sealed: await sealFor(world, x26, m.bytes, m.format, m.routing),
      direct: true,
      expected: { status: 'rejected', stage: 'authenticate', itk3Code: '20012', code: 'TOKEN_MISSING' },
    });
  }
  return out;
}

/**
 * The key a sender encrypts to for `ods`: the world's published key, or the local keystore's
 * (embedded mode). Unknown recipients get A83627's key, as a misaddressed sender would.
 */
export function recipientKeyFor(world: DemoWorld, ods: string): { key: JWK; kid: string } {
  const published = world.publishedRecipientKeys?.[ods] ?? world.publishedRecipientKeys?.A83627;
  if (published) return published;
  const entry = (world.recipients[ods as keyof DemoWorld['recipients']] ?? world.recipients.A83627).key;
  // As published (RSA or P-256, with its `alg`): the sealed message's JWE alg follows the key.
  return { key: publicJwk(entry), kid: entry.kid };
}
