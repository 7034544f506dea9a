/**
 * Authorisation: deny by default. A message is allowed only when one rule matches
 * (sender organisation, client, event, recipient) and, for a delegated credential, every actor in
 * the chain holds an unexpired grant for that organisation and event. The decision names the rule
 * (and grant) that matched, for the audit trail.
 *
 * Only the verified principal and the JWE's routing header are known here; the routing header is
 * unauthenticated until the verify stage re-checks it against the signed JWS and the MessageHeader.
 */
import { isClientOf, type LoadedConfig } from '../config/load.js';
import type { DelegationGrant, PolicyRule } from '../config/schema.js';
import { scopeCovers } from '../config/scope.js';
import type { ItkRouting } from '../envelope/routing.js';
import { AuthorisationError, EnvelopeError } from '../errors.js';
import type { Decision, Principal } from '../record.js';

export interface AuthoriseInput {
  principal: Principal;
  routing: ItkRouting;
  /** Recipient key id named by the JWE header. */
  kid: string;
  receivedAt: number;
}

/**
 * The checks {@link authorise} makes, in the order it makes them. `itk3 explain` is told each one
 * that passed, so it can show where a message stopped without deciding anything itself.
 */
export const POLICY_CHECKS = [
  'issuer-configured',
  'issuer-scope',
  'routing-sender',
  'sender-known',
  'client-of-sender',
  'recipient-known',
  'recipient-key',
  'delegation',
  'rule',
] as const;
export type PolicyCheck = (typeof POLICY_CHECKS)[number];

/**
 * Decide whether a message may proceed to decryption. Throws the specific rejection otherwise.
 * `onPass` (explain only) is told each check of {@link POLICY_CHECKS} as it passes.
 */
export function authorise(
  input: AuthoriseInput,
  config: LoadedConfig,
  onPass: (check: PolicyCheck) => void = () => {},
): Decision {
  const { principal, routing, kid, receivedAt } = input;

  // The principal comes off a queue: re-check that its issuer may still speak for it, so a scope
  // narrowed between stages (a configuration update) takes effect here too.
  const issuer = config.issuersById.get(principal.issuer);
  if (!issuer || issuer.issuer !== principal.iss) {
    throw new AuthorisationError('POLICY_DENIED', 'principal issuer is not a configured issuer');
  }
  onPass('issuer-configured');
  if (!scopeCovers(issuer.organisations, principal.organisation)) {
    throw new AuthorisationError(
      'TOKEN_ORGANISATION_OUT_OF_SCOPE',
      "principal organisation is outside its issuer's scope",
    );
  }
  onPass('issuer-scope');

  // The envelope must be sent for the organisation the credential speaks for.
  if (routing.from !== principal.organisation) {
    throw new AuthorisationError(
      'ROUTING_SENDER_MISMATCH',
      'routing sender differs from the credential organisation',
    );
  }
  onPass('routing-sender');
  const sender = config.sendersByOds.get(routing.from);
  if (!sender) throw new AuthorisationError('SENDER_UNKNOWN', 'sender organisation is not registered');
  onPass('sender-known');
  if (!isClientOf(sender, principal.issuer, principal.subject)) {
    throw new AuthorisationError(
      'POLICY_DENIED',
      'credential (issuer, subject) is not a client of the sender organisation',
    );
  }
  onPass('client-of-sender');

  const recipient = config.recipientsByOds.get(routing.to);
  if (!recipient)
    throw new AuthorisationError('RECIPIENT_UNKNOWN', 'recipient organisation is not served here');
  onPass('recipient-known');
  if (config.recipientByKid.get(kid) !== recipient.ods) {
    throw new EnvelopeError('ENVELOPE_KEY_UNKNOWN', 'the envelope key id is not a key of the recipient');
  }
  onPass('recipient-key');

  const delegation = checkDelegation(principal, routing, receivedAt, config.doc.delegations);
  onPass('delegation');

  const rule = config.doc.rules.find((r) => ruleMatches(r, principal, routing));
  if (!rule)
    throw new AuthorisationError('POLICY_DENIED', 'no policy rule allows this sender, event and recipient');
  onPass('rule');

  return {
    ruleId: rule.id,
    recipient: recipient.ods,
    kid,
    ...(delegation ? { delegationId: delegation } : {}),
  };
}

/** A rule by id (the verify stage re-applies its content constraints). */
export function ruleById(config: LoadedConfig, id: string): PolicyRule | undefined {
  return config.doc.rules.find((r) => r.id === id);
}

function ruleMatches(rule: PolicyRule, principal: Principal, routing: ItkRouting): boolean {
  return ruleMismatches(rule, principal, routing).length === 0;
}

/** Why `rule` does not match a message: empty when it matches. Named for `itk3 explain`. */
export function ruleMismatches(
  rule: PolicyRule,
  principal: Pick<Principal, 'issuer' | 'subject'>,
  routing: ItkRouting,
): ('sender' | 'event' | 'recipient' | 'client')[] {
  const out: ('sender' | 'event' | 'recipient' | 'client')[] = [];
  if (rule.sender.ods !== routing.from) out.push('sender');
  if (rule.event !== routing.event) out.push('event');
  if (!rule.recipients.includes(routing.to)) out.push('recipient');
  if (
    rule.sender.clients !== undefined &&
    !rule.sender.clients.some((c) => c.issuer === principal.issuer && c.sub === principal.subject)
  ) {
    out.push('client');
  }
  return out;
}

/**
 * Every actor in the chain must hold a grant covering the organisation and event, valid at
 * receipt time, and naming the issuer that vouched for the actor (the credential's issuer: the
 * authenticate stage refuses an `act` that names another). Returns the id of the current actor's
 * grant, or undefined when not delegated.
 */
function checkDelegation(
  principal: Principal,
  routing: ItkRouting,
  receivedAt: number,
  grants: readonly DelegationGrant[],
): string | undefined {
  if (principal.actors.length === 0) return undefined;
  let currentGrant: string | undefined;
  for (const [depth, actor] of principal.actors.entries()) {
    const candidates = grants.filter(
      (g) =>
        g.actor === actor &&
        g.issuers.includes(principal.issuer) &&
        g.onBehalfOf.includes(routing.from) &&
        g.events.includes(routing.event),
    );
    if (candidates.length === 0) {
      throw new AuthorisationError(
        'DELEGATION_NOT_GRANTED',
        `actor at depth ${depth} holds no grant for this issuer, sender and event`,
      );
    }
    const valid = candidates.find((g) => grantExpiry(g) > receivedAt);
    if (!valid)
      throw new AuthorisationError(
        'DELEGATION_GRANT_EXPIRED',
        `grant for actor at depth ${depth} has expired`,
      );
    if (depth === 0) currentGrant = valid.id;
  }
  return currentGrant;
}

/** A date-only expiry means "valid through that day, UTC"; a date-time is exact. */
export function grantExpiry(grant: DelegationGrant): number {
  if (grant.expires.length === 10) return Date.parse(`${grant.expires}T00:00:00Z`) + 86_400_000;
  return Date.parse(grant.expires);
}
