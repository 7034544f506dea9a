/**
 * Stage 2 — authorise on the verified principal and the JWE's routing header, without decrypting
 * (SECURITY-CORPUS.md rule 7: no KMS call for an unauthorised message). A MESH message is judged on
 * its mailbox and its routing: the JWE header when sealed, else the plain Bundle's MessageHeader.
 */
import { parseSealed } from '../envelope/jwe.js';
import type { ItkRouting } from '../envelope/routing.js';
import { AuthenticationError, EnvelopeError, Itk3ValidationError, type RejectionError } from '../errors.js';
import { parseBundle } from '../itk3/parse.js';
import { authorise as decide } from '../policy/index.js';
import { authoriseMesh, soleRecipientOf } from '../policy/mesh.js';
import type { PipelineRecord } from '../record.js';
import { loadArtefact } from './claim-check.js';
import type { Stage, StageContext } from './stage.js';

/** The ports authorise's own code uses: the blob store, for a claim-checked envelope. */
type AuthorisePorts = 'blobs';

export async function authoriseRecord(
  record: PipelineRecord,
  ctx: StageContext<AuthorisePorts>,
): Promise<PipelineRecord> {
  if (record.principal?.transport === 'mesh') return authoriseMeshStage(record, ctx);
  if (!record.principal || !record.sealed) {
    throw new AuthenticationError('TOKEN_MISSING', 'record reached authorise without a principal');
  }
  const compact = await loadArtefact(ctx, record.sealed);
  const parsed = parseSealed(compact, ctx.config.doc.limits);
  const decision = decide(
    { principal: record.principal, routing: parsed.routing, kid: parsed.kid, receivedAt: record.receivedAt },
    ctx.config,
  );
  return { ...record, routing: parsed.routing, decision };
}

/** A compact JWE: five base64url segments, the first a JSON object. */
const COMPACT_JWE = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

async function authoriseMeshStage(
  record: PipelineRecord,
  ctx: StageContext<AuthorisePorts>,
): Promise<PipelineRecord> {
  const { principal, mesh: facts, meshBody } = record;
  if (!principal || !facts || !meshBody) {
    throw new AuthenticationError('TOKEN_MISSING', 'MESH record reached authorise without its facts');
  }
  const limits = ctx.config.doc.limits;
  if (facts.bodyEncoding !== 'utf-8') {
    throw new Itk3ValidationError('BUNDLE_UNREADABLE', 'the MESH message body is not text');
  }
  const text = await loadArtefact(ctx, meshBody);
  const bytes = Buffer.from(text, 'utf8');
  const sealed = COMPACT_JWE.test(text);
  let routing: ItkRouting;
  let kid: string | undefined;
  let hints: RejectionError['responseHints'];
  if (sealed) {
    const parsed = parseSealed(text, limits);
    routing = parsed.routing;
    kid = parsed.kid;
  } else {
    // Plain ITK3: the Bundle is the mailbox's word; its size is checked before it is read.
    if (bytes.byteLength > limits.maxBundleBytes) {
      throw new Itk3ValidationError('MESSAGE_TOO_LARGE', 'bundle exceeds the size limit');
    }
    ({ routing, hints } = plainRouting(bytes, facts.to, ctx));
  }
  let outcome: ReturnType<typeof authoriseMesh>;
  try {
    outcome = authoriseMesh({ principal, facts, routing, kid, receivedAt: record.receivedAt }, ctx.config);
  } catch (error) {
    // A plain Bundle's header is the mailbox's own word: its response names the message it refuses.
    if (hints && error && typeof error === 'object' && 'itk3Code' in error) {
      (error as RejectionError).responseHints = hints;
    }
    throw error;
  }
  const { decision, organisation } = outcome;
  const { meshBody: body, ...rest } = record;
  return {
    ...rest,
    principal: { ...principal, organisation },
    ...(sealed ? { sealed: body } : { plain: body }),
    routing,
    decision,
  };
}

/** The routing of a plain Bundle: its MessageHeader, the recipient defaulting to the mailbox's one. */
function plainRouting(
  bytes: Uint8Array,
  gatewayMailbox: string,
  ctx: StageContext<AuthorisePorts>,
): { routing: ItkRouting; hints: NonNullable<RejectionError['responseHints']> } {
  const format = sniff(bytes);
  let msg: ReturnType<typeof parseBundle>;
  try {
    msg = parseBundle(bytes, format);
  } catch (error) {
    if (error && typeof error === 'object' && 'itk3Code' in error) {
      (error as RejectionError).responseHints = { format, ...(error as RejectionError).responseHints };
    }
    throw error;
  }
  const hints = {
    originalMessageId: msg.header.id,
    format,
    ...(msg.header.handling.senderReference ? { senderReference: msg.header.handling.senderReference } : {}),
  };
  const to =
    msg.header.receiverOds ??
    (msg.header.senderOds
      ? soleRecipientOf(ctx.config, gatewayMailbox, msg.header.senderOds, msg.header.event.code)
      : undefined);
  if (!msg.header.senderOds || !to) {
    const error = new Itk3ValidationError(
      'ITK3_HEADER_INVALID',
      msg.header.senderOds
        ? 'no MessageHeader receiver and the mailbox serves several recipients'
        : 'no sender ODS',
    );
    error.responseHints = hints;
    throw error;
  }
  return {
    routing: { from: msg.header.senderOds, to, event: msg.header.event.code, id: msg.header.id },
    hints,
  };
}

function sniff(bytes: Uint8Array): 'xml' | 'json' {
  for (const b of bytes) {
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) continue;
    if (b === 0x3c) return 'xml';
    if (b === 0x7b) return 'json';
    break;
  }
  throw new EnvelopeError(
    'ENVELOPE_MALFORMED',
    'the MESH message is neither a compact JWE nor an ITK3 Bundle',
  );
}

/** Stage 2: the policy's decision on the authenticated sender and the routing, before any decryption. */
export const authorise: Stage<AuthorisePorts> = {
  name: 'authorise',
  async run(record, ctx) {
    return { kind: 'forward', record: await authoriseRecord(record, ctx) };
  },
};
