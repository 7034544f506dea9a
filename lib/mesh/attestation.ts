/**
 * Who may say "this came through MESH": the poller's attestation.
 *
 * A MESH message on the inbound queue is authenticated by MESH (its sender is the mailbox in
 * `Mex-From`), so the queue attributes that carry those facts must not be writable by anyone else.
 * In AWS a partner using direct SQS ingestion could set any attribute, `Transport: mesh` and
 * `Mex-From` included. So the poller signs what it read from MESH (the facts and the SHA-256 of the
 * queue body) with a gateway key held by the key service (KMS in AWS; by default the
 * response-signing key, under a distinct `typ` so neither kind of signature can pass for the other),
 * and the authenticate stage accepts a MESH message only with a valid attestation over exactly
 * those facts and that body. Anyone who can write to the queue but not sign with that key cannot
 * claim MESH: an unattested or mis-attested `Transport` attribute is an unauthenticated submission.
 *
 * Replaying an attested message puts the same MESH message through again: the per-organisation
 * duplicate check (20007) answers it.
 */
import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import { signCompactWithKeyService } from '../envelope/response-sign.js';
import { sha256Hex } from '../hashing.js';
import type { KeyService } from '../ports/index.js';
import type { MeshFacts } from '../record.js';

/** The queue message attribute holding the attestation (a compact ES256 JWS). */
export const MESH_ATTESTATION_ATTRIBUTE = 'Mesh-Attestation';
/** `typ` of an attestation: a response or any other gateway signature never carries it. */
const MESH_ATTESTATION_TYP = 'itk3-mesh-attestation';

const encoder = new TextEncoder();

/** The facts as read from the queue attributes and body (poller and authenticate use this one function). */
export function meshFactsFrom(
  attributes: Readonly<Record<string, string | undefined>>,
  body: string,
): MeshFacts | undefined {
  const from = attributes['Mex-From'];
  const to = attributes['Mex-To'];
  const workflowId = attributes['Mex-WorkflowID'];
  const messageId = attributes['Mex-MessageID'];
  const encoding = attributes['Mex-Body-Encoding'];
  if (!from || !to || !workflowId || !messageId) return undefined;
  if (encoding !== 'utf-8' && encoding !== 'base64') return undefined;
  if (from.length > 64 || to.length > 64 || workflowId.length > 64 || messageId.length > 128)
    return undefined;
  const localId = attributes['Mex-LocalID'];
  return {
    from: from.toUpperCase(),
    to: to.toUpperCase(),
    workflowId,
    messageId,
    ...(localId ? { localId: localId.slice(0, 256) } : {}),
    bodyEncoding: encoding,
    bodySha256: sha256Hex(body),
  };
}

/** The exact bytes signed: the facts in a fixed order. */
function attestedBytes(facts: MeshFacts): Uint8Array {
  return encoder.encode(
    JSON.stringify({
      v: 1,
      from: facts.from,
      to: facts.to,
      workflowId: facts.workflowId,
      messageId: facts.messageId,
      localId: facts.localId ?? null,
      bodyEncoding: facts.bodyEncoding,
      bodySha256: facts.bodySha256,
    }),
  );
}

/** Sign the facts of one message (the poller, before it enqueues). */
export function attestMeshFacts(keys: KeyService, kid: string, facts: MeshFacts): Promise<string> {
  return signCompactWithKeyService(keys, kid, { typ: MESH_ATTESTATION_TYP }, attestedBytes(facts));
}

/**
 * Whether `attestation` is the gateway's signature, by key `kid`, over exactly `facts`. Any
 * malformation is `false`; an unavailable key service throws (the caller retries).
 */
export async function verifyMeshAttestation(
  keys: KeyService,
  kid: string,
  attestation: string,
  facts: MeshFacts,
): Promise<boolean> {
  const parts = attestation.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) return false;
  const [encodedHeader, encodedPayload, encodedSignature] = parts as [string, string, string];
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(encodedHeader, 'base64url').toString('utf8'));
  } catch {
    return false;
  }
  const h = header as Record<string, unknown>;
  if (
    !h ||
    typeof h !== 'object' ||
    h.alg !== 'ES256' ||
    h.kid !== kid ||
    h.typ !== MESH_ATTESTATION_TYP ||
    Object.keys(h).length !== 3
  ) {
    return false;
  }
  const expected = attestedBytes(facts);
  if (!Buffer.from(encodedPayload, 'base64url').equals(Buffer.from(expected))) return false;
  const signature = Buffer.from(encodedSignature, 'base64url');
  if (signature.length !== 64) return false;
  const key = await publicKey(keys, kid);
  return verify(
    'sha256',
    Buffer.from(`${encodedHeader}.${encodedPayload}`, 'ascii'),
    { key, dsaEncoding: 'ieee-p1363' },
    signature,
  );
}

const publicKeys = new WeakMap<KeyService, Map<string, KeyObject>>();

async function publicKey(keys: KeyService, kid: string): Promise<KeyObject> {
  let perService = publicKeys.get(keys);
  if (!perService) {
    perService = new Map();
    publicKeys.set(keys, perService);
  }
  const cached = perService.get(kid);
  if (cached) return cached;
  const key = createPublicKey({
    key: Buffer.from(await keys.publicKeySpki(kid)),
    format: 'der',
    type: 'spki',
  });
  perService.set(kid, key);
  return key;
}

/** The attestation key of a configuration: `mesh.attestationKid`, else the response-signing key. */
export function attestationKid(config: {
  doc: { mesh?: { attestationKid?: string }; responseSigning: { kid: string } };
}): string {
  return config.doc.mesh?.attestationKid ?? config.doc.responseSigning.kid;
}
