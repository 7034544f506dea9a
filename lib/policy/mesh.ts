/**
 * Authorisation of a message MESH authenticated: may this mailbox speak for the organisation the
 * message names, for this event, to this recipient, under a rule that accepts MESH (and, when the
 * rule requires it, only sealed)? Deny by default, as for credentials (lib/policy/index.ts).
 */
import type { LoadedConfig } from '../config/load.js';
import type { ItkRouting } from '../envelope/routing.js';
import { AuthorisationError, EnvelopeError } from '../errors.js';
import type { Decision, MeshFacts, Principal } from '../record.js';
import { grantExpiry } from './index.js';

/**
 * Whether `mailbox` may send to the gateway at all: it belongs to a sender
 * (`senders[].mesh.mailboxes`) or a delegation grant names it. The poller asks before it spends
 * anything on a message (attestation signature, claim check, enqueue); authenticate asks again.
 */
export function meshMailboxKnown(config: LoadedConfig, mailbox: string | undefined): boolean {
  if (mailbox === undefined) return false;
  return (
    config.meshSenderByMailbox.has(mailbox) ||
    config.doc.delegations.some((g) => g.meshMailboxes?.includes(mailbox))
  );
}

export interface MeshAuthoriseInput {
  principal: Principal;
  facts: MeshFacts;
  /** From the JWE header (sealed) or the MessageHeader (plain): the mailbox's claim. */
  routing: ItkRouting;
  /** Recipient key id of a sealed message; absent for plain ITK3. */
  kid: string | undefined;
  receivedAt: number;
}

/**
 * The recipient of a plain Bundle whose MessageHeader names none (ITK3 use cases such as GP Connect
 * Send Document forbid `receiver`): the one recipient the receiving mailbox serves that a MESH rule
 * lets this sender send this event to; undefined when none or several.
 */
export function soleRecipientOf(
  config: LoadedConfig,
  gatewayMailbox: string,
  senderOds: string,
  event: string,
): string | undefined {
  const entry = config.doc.mesh?.mailboxes.find((m) => m.mailbox === gatewayMailbox);
  if (!entry) return undefined;
  if (entry.recipients.length === 1) return entry.recipients[0];
  const allowed = entry.recipients.filter((ods) =>
    config.doc.rules.some(
      (r) =>
        r.sender.ods === senderOds &&
        r.event === event &&
        r.transports.includes('mesh') &&
        r.recipients.includes(ods),
    ),
  );
  return allowed.length === 1 ? allowed[0] : undefined;
}

/** Decide, or throw the specific rejection. Returns the decision and the organisation spoken for. */
export function authoriseMesh(
  input: MeshAuthoriseInput,
  config: LoadedConfig,
): { decision: Decision; organisation: string } {
  const { principal, facts, routing, kid, receivedAt } = input;
  const mailbox = principal.subject;
  if (principal.transport !== 'mesh' || mailbox !== facts.from) {
    throw new AuthorisationError('POLICY_DENIED', 'principal is not the MESH sending mailbox');
  }

  // The mailbox speaks for its owner, or for an organisation a grant names it for.
  let delegationId: string | undefined;
  if (config.meshSenderByMailbox.get(mailbox) !== routing.from) {
    const grants = config.doc.delegations.filter(
      (g) =>
        g.meshMailboxes?.includes(mailbox) &&
        g.onBehalfOf.includes(routing.from) &&
        g.events.includes(routing.event),
    );
    if (grants.length === 0) {
      throw new AuthorisationError(
        'MESH_MAILBOX_NOT_REGISTERED',
        "the sending mailbox is not registered for the MessageHeader's sender organisation and event",
      );
    }
    const valid = grants.find((g) => grantExpiry(g) > receivedAt);
    if (!valid) throw new AuthorisationError('DELEGATION_GRANT_EXPIRED', "the mailbox's grant has expired");
    delegationId = valid.id;
  }
  const sender = config.sendersByOds.get(routing.from);
  if (!sender) throw new AuthorisationError('SENDER_UNKNOWN', 'sender organisation is not registered');

  // `Mex-To` must be the gateway mailbox that receives for the recipient.
  const gateway = config.doc.mesh?.mailboxes.find((m) => m.mailbox === facts.to);
  const recipient = config.recipientsByOds.get(routing.to);
  if (!gateway || !recipient || !gateway.recipients.includes(routing.to)) {
    throw new AuthorisationError(
      'RECIPIENT_UNKNOWN',
      'the recipient organisation is not served through the receiving mailbox',
    );
  }
  if (kid !== undefined && config.recipientByKid.get(kid) !== recipient.ods) {
    throw new EnvelopeError('ENVELOPE_KEY_UNKNOWN', 'the envelope key id is not a key of the recipient');
  }

  const candidates = config.doc.rules.filter(
    (r) =>
      r.sender.ods === routing.from &&
      r.event === routing.event &&
      r.recipients.includes(routing.to) &&
      r.transports.includes('mesh') &&
      // Rules that restrict to credential clients are about credentials, not mailboxes.
      r.sender.clients === undefined,
  );
  const rule = candidates.find((r) => kid !== undefined || r.meshSealed === 'optional');
  if (!rule) {
    throw new AuthorisationError(
      'POLICY_DENIED',
      candidates.length > 0
        ? 'the rule for this sender, event and recipient requires a sealed message over MESH'
        : 'no policy rule allows this sender, event and recipient over MESH',
    );
  }
  return {
    organisation: routing.from,
    decision: {
      ruleId: rule.id,
      recipient: recipient.ods,
      kid: kid ?? 'plain',
      ...(delegationId ? { delegationId } : {}),
    },
  };
}
