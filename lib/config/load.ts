import { readFileSync } from 'node:fs';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import {
  type ClientRef,
  ConfigSchema,
  type IssuerConfig,
  type PipelineConfig,
  type PublicJwk,
  type RecipientConfig,
  type SenderConfig,
} from './schema.js';
import { entriesOverlap, scopeCovers } from './scope.js';

/** A validated configuration with look-up indexes. Frozen: stages never change it. */
export interface LoadedConfig {
  readonly doc: PipelineConfig;
  readonly issuersByIss: ReadonlyMap<string, IssuerConfig>;
  /** Configured issuer id → issuer (principals and clients name issuers by id). */
  readonly issuersById: ReadonlyMap<string, IssuerConfig>;
  readonly sendersByOds: ReadonlyMap<string, SenderConfig>;
  readonly recipientsByOds: ReadonlyMap<string, RecipientConfig>;
  /** Recipient key id → owning recipient ODS. */
  readonly recipientByKid: ReadonlyMap<string, string>;
  /** Sender signing key id → owning sender ODS and the key. */
  readonly senderKeyByKid: ReadonlyMap<string, { ods: string; jwk: PublicJwk }>;
  /** MESH mailbox → the sender organisation that owns it (`senders[].mesh.mailboxes`). */
  readonly meshSenderByMailbox: ReadonlyMap<string, string>;
  /**
   * Things that are allowed but widen trust, for `config validate` to show: today, two issuers
   * whose scopes overlap (both may speak for the same organisation).
   */
  readonly warnings: readonly string[];
}

/**
 * Validate a configuration document and build its indexes.
 * Throws {@link ConfigError} listing every problem (schema and cross-references) at once.
 */
export function loadConfig(input: unknown): LoadedConfig {
  const parsed = ConfigSchema.safeParse(input);
  if (!parsed.success) {
    // Report cross-reference problems too, over the parts that are well-formed on their own, so a
    // broken document is fixed in one round rather than two.
    const problems = parsed.error.issues.map(formatIssue);
    const checked = crossReference(bestEffortSections(input));
    problems.push(...checked.problems);
    throw new ConfigError(problems, checked.warnings);
  }
  const doc = parsed.data;
  const indexed = <T>(items: readonly T[]): [number, T][] => items.map((item, i) => [i, item]);
  const { problems, ...indexes } = crossReference({
    issuers: indexed(doc.issuers),
    senders: indexed(doc.senders),
    recipients: indexed(doc.recipients),
    rules: indexed(doc.rules),
    delegations: indexed(doc.delegations),
    responseSigningKid: doc.responseSigning.kid,
    ...(doc.mesh ? { mesh: doc.mesh } : {}),
  });
  if (problems.length > 0) throw new ConfigError(problems, indexes.warnings);
  return deepFreeze({ doc, ...indexes });
}

/** Each section as [index in the document, element] pairs, so messages name the right element. */
interface Sections {
  issuers: [number, IssuerConfig][];
  senders: [number, SenderConfig][];
  recipients: [number, RecipientConfig][];
  rules: [number, PipelineConfig['rules'][number]][];
  delegations: [number, PipelineConfig['delegations'][number]][];
  responseSigningKid: string | undefined;
  mesh?: PipelineConfig['mesh'];
  /**
   * Names (sender and recipient ODS codes, issuer ids) of elements that are present but failed the
   * schema: they are already reported, so references to them are not reported again as unknown.
   */
  malformed?: Record<'issuers' | 'senders' | 'recipients', ReadonlySet<string>>;
}

/** The elements of a schema-invalid document that are valid on their own. */
function bestEffortSections(input: unknown): Sections {
  const raw = (input && typeof input === 'object' ? input : {}) as Record<string, unknown>;
  const shape = ConfigSchema.shape;
  const valid = <T>(key: string, schema: z.ZodType<T>): [number, T][] => {
    const list = raw[key];
    if (!Array.isArray(list)) return [];
    return list.flatMap((item, i) => {
      const r = schema.safeParse(item);
      return r.success ? [[i, r.data] as [number, T]] : [];
    });
  };
  const signing = shape.responseSigning.safeParse(raw.responseSigning);
  const meshSection = shape.mesh.safeParse(raw.mesh);
  const malformedNames = (key: string, name: string, schema: z.ZodType): Set<string> => {
    const list = raw[key];
    const names = new Set<string>();
    for (const item of Array.isArray(list) ? list : []) {
      const value = item && typeof item === 'object' ? (item as Record<string, unknown>)[name] : undefined;
      if (typeof value === 'string' && !schema.safeParse(item).success) names.add(value);
    }
    return names;
  };
  const malformed = {
    issuers: malformedNames('issuers', 'id', shape.issuers.element),
    senders: malformedNames('senders', 'ods', shape.senders.element),
    recipients: malformedNames('recipients', 'ods', shape.recipients.element),
  };
  return {
    malformed,
    issuers: valid('issuers', shape.issuers.element),
    senders: valid('senders', shape.senders.element),
    recipients: valid('recipients', shape.recipients.element),
    rules: valid('rules', shape.rules.element),
    delegations: valid('delegations', shape.delegations.unwrap().element),
    responseSigningKid: signing.success ? signing.data.kid : undefined,
    ...(meshSection.success && meshSection.data ? { mesh: meshSection.data } : {}),
  };
}

/** Uniqueness and cross-references between sections; builds the look-up indexes on the way. */
function crossReference(sections: Sections): Omit<LoadedConfig, 'doc'> & { problems: string[] } {
  const problems: string[] = [];
  const none = new Set<string>();
  const malformed = sections.malformed ?? { issuers: none, senders: none, recipients: none };

  const issuersByIss = new Map<string, IssuerConfig>();
  const issuersById = new Map<string, IssuerConfig>();
  for (const [i, issuer] of sections.issuers) {
    if (issuersByIss.has(issuer.issuer))
      problems.push(`issuers.${i}.issuer: "${issuer.issuer}" is listed twice`);
    if (issuersById.has(issuer.id)) problems.push(`issuers.${i}.id: "${issuer.id}" is listed twice`);
    issuersByIss.set(issuer.issuer, issuer);
    issuersById.set(issuer.id, issuer);
    duplicateKids(issuer.keys, `issuers.${i}.keys`, problems);
    const entries = new Set<string>();
    for (const [k, entry] of issuer.organisations.entries()) {
      if (entries.has(entry)) problems.push(`issuers.${i}.organisations.${k}: "${entry}" is listed twice`);
      entries.add(entry);
    }
  }
  const warnings = scopeOverlaps(sections.issuers);

  /** Problems with a (issuer, sub) client of `ods`, where `where` names it in the document. */
  const clientProblems = (client: ClientRef, ods: string, where: string): void => {
    const issuer = issuersById.get(client.issuer);
    if (!issuer) {
      if (!malformed.issuers.has(client.issuer))
        problems.push(`${where}.issuer: "${client.issuer}" is not a configured issuer id`);
    } else if (!scopeCovers(issuer.organisations, ods)) {
      problems.push(
        `${where}.issuer: issuer "${client.issuer}" may not speak for ${ods} (not in its organisations), so this client's credentials would be refused`,
      );
    }
  };

  const sendersByOds = new Map<string, SenderConfig>();
  const meshSenderByMailbox = new Map<string, string>();
  const senderKeyByKid = new Map<string, { ods: string; jwk: PublicJwk }>();
  for (const [i, sender] of sections.senders) {
    if (sendersByOds.has(sender.ods)) problems.push(`senders.${i}.ods: "${sender.ods}" is listed twice`);
    sendersByOds.set(sender.ods, sender);
    const clientKeys = new Set<string>();
    for (const [c, client] of sender.clients.entries()) {
      clientProblems(client, sender.ods, `senders.${i}.clients.${c}`);
      const key = clientKey(client);
      if (clientKeys.has(key)) {
        problems.push(`senders.${i}.clients.${c}: ${describeClient(client)} is listed twice`);
      }
      clientKeys.add(key);
    }
    for (const [m, mailbox] of (sender.mesh?.mailboxes ?? []).entries()) {
      const owner = meshSenderByMailbox.get(mailbox);
      if (owner !== undefined) {
        problems.push(
          `senders.${i}.mesh.mailboxes.${m}: MESH mailbox "${mailbox}" already belongs to ${owner}: a mailbox speaks for one organisation (use a delegation grant for a third party's mailbox)`,
        );
      } else meshSenderByMailbox.set(mailbox, sender.ods);
    }
    for (const [k, jwk] of sender.signingKeys.entries()) {
      if (senderKeyByKid.has(jwk.kid)) {
        problems.push(`senders.${i}.signingKeys.${k}.kid: "${jwk.kid}" is used by another sender key`);
      }
      senderKeyByKid.set(jwk.kid, { ods: sender.ods, jwk });
    }
  }

  const recipientsByOds = new Map<string, RecipientConfig>();
  const recipientByKid = new Map<string, string>();
  for (const [i, recipient] of sections.recipients) {
    if (recipientsByOds.has(recipient.ods))
      problems.push(`recipients.${i}.ods: "${recipient.ods}" is listed twice`);
    recipientsByOds.set(recipient.ods, recipient);
    for (const [k, key] of recipient.keys.entries()) {
      if (recipientByKid.has(key.kid))
        problems.push(`recipients.${i}.keys.${k}.kid: "${key.kid}" is listed twice`);
      recipientByKid.set(key.kid, recipient.ods);
    }
  }
  if (sections.responseSigningKid !== undefined && recipientByKid.has(sections.responseSigningKid)) {
    problems.push('responseSigning.kid: must differ from every recipient key id');
  }

  const ruleIds = new Set<string>();
  for (const [i, rule] of sections.rules) {
    if (ruleIds.has(rule.id)) problems.push(`rules.${i}.id: "${rule.id}" is listed twice`);
    ruleIds.add(rule.id);
    const sender = sendersByOds.get(rule.sender.ods);
    if (!sender && !malformed.senders.has(rule.sender.ods))
      problems.push(`rules.${i}.sender.ods: "${rule.sender.ods}" is not a configured sender`);
    for (const [c, client] of (rule.sender.clients ?? []).entries()) {
      if (sender && !isClientOf(sender, client.issuer, client.sub)) {
        problems.push(
          `rules.${i}.sender.clients.${c}: ${describeClient(client)} is not a client of sender ${rule.sender.ods}`,
        );
      }
    }
    for (const r of rule.recipients) {
      if (!recipientsByOds.has(r) && !malformed.recipients.has(r))
        problems.push(`rules.${i}.recipients: "${r}" is not a configured recipient`);
    }
  }

  const grantIds = new Set<string>();
  for (const [i, grant] of sections.delegations) {
    if (grantIds.has(grant.id)) problems.push(`delegations.${i}.id: "${grant.id}" is listed twice`);
    grantIds.add(grant.id);
    const named = grant.issuers.flatMap((id, k) => {
      const issuer = issuersById.get(id);
      if (!issuer && !malformed.issuers.has(id))
        problems.push(`delegations.${i}.issuers.${k}: "${id}" is not a configured issuer id`);
      return issuer ? [issuer] : [];
    });
    for (const org of grant.onBehalfOf) {
      if (!sendersByOds.has(org) && !malformed.senders.has(org))
        problems.push(`delegations.${i}.onBehalfOf: "${org}" is not a configured sender`);
      // The actor's credential carries the organisation, so only a named issuer that may speak
      // for it can ever use this grant for it.
      if (
        grant.issuers.length > 0 &&
        named.length === grant.issuers.length &&
        !named.some((n) => scopeCovers(n.organisations, org))
      ) {
        problems.push(
          `delegations.${i}.onBehalfOf: "${org}" is outside the organisations of every issuer the grant names, so the grant can never apply to it`,
        );
      }
    }
  }

  if (sections.mesh) meshProblems(sections.mesh, recipientsByOds, meshSenderByMailbox, problems);
  for (const [i, rule] of sections.rules) {
    if (rule.transports.includes('mesh') && !sections.mesh) {
      problems.push(`rules.${i}.transports: "mesh" needs the gateway's MESH connection (the "mesh" section)`);
    }
  }

  return {
    problems,
    warnings,
    meshSenderByMailbox,
    issuersByIss,
    issuersById,
    sendersByOds,
    recipientsByOds,
    recipientByKid,
    senderKeyByKid,
  };
}

/** The gateway's MESH section: its mailboxes are its own, serve known recipients, one per recipient. */
function meshProblems(
  mesh: NonNullable<PipelineConfig['mesh']>,
  recipientsByOds: ReadonlyMap<string, RecipientConfig>,
  meshSenderByMailbox: ReadonlyMap<string, string>,
  problems: string[],
): void {
  const mailboxes = new Set<string>();
  const servedBy = new Map<string, string>();
  for (const [i, entry] of mesh.mailboxes.entries()) {
    if (mailboxes.has(entry.mailbox))
      problems.push(`mesh.mailboxes.${i}.mailbox: "${entry.mailbox}" is listed twice`);
    mailboxes.add(entry.mailbox);
    const owner = meshSenderByMailbox.get(entry.mailbox);
    if (owner) {
      problems.push(
        `mesh.mailboxes.${i}.mailbox: "${entry.mailbox}" is the gateway's, but sender ${owner} lists it too`,
      );
    }
    for (const ods of entry.recipients) {
      if (!recipientsByOds.has(ods)) {
        problems.push(`mesh.mailboxes.${i}.recipients: "${ods}" is not a configured recipient`);
      }
      const other = servedBy.get(ods);
      if (other !== undefined && other !== entry.mailbox) {
        problems.push(`mesh.mailboxes.${i}.recipients: "${ods}" is already served by mailbox ${other}`);
      }
      servedBy.set(ods, entry.mailbox);
    }
  }
  if (mesh.sendFrom !== undefined && !mailboxes.has(mesh.sendFrom)) {
    problems.push(`mesh.sendFrom: "${mesh.sendFrom}" is not one of mesh.mailboxes`);
  }
}

/**
 * Pairs of issuers that may both speak for some organisation. Reported as warnings, not errors:
 * an overlap is sometimes meant (a practice moving from one identity provider to another, a
 * national issuer beside a regional one), and it opens no path by itself, since a credential must
 * also name a client registered under its own issuer for that organisation. It does widen who can
 * speak for those organisations, so the operator must see it.
 */
function scopeOverlaps(issuers: readonly [number, IssuerConfig][]): string[] {
  const warnings: string[] = [];
  for (const [n, [i, a]] of issuers.entries()) {
    for (const [j, b] of issuers.slice(n + 1)) {
      const shared = a.organisations.flatMap((x) =>
        b.organisations.flatMap((y) => {
          const both = entriesOverlap(x, y);
          return both === undefined ? [] : [`${both} ("${x}" / "${y}")`];
        }),
      );
      if (shared.length > 0) {
        warnings.push(
          `issuers.${i} "${a.id}" and issuers.${j} "${b.id}" may both speak for ${shared.join(', ')}`,
        );
      }
    }
  }
  return warnings;
}

/** Whether (issuer id, subject) is a registered client of `sender`. */
export function isClientOf(sender: SenderConfig, issuerId: string, sub: string): boolean {
  return sender.clients.some((c) => c.issuer === issuerId && c.sub === sub);
}

function clientKey(client: ClientRef): string {
  return `${client.issuer}\u0000${client.sub}`;
}

function describeClient(client: ClientRef): string {
  return `client "${client.sub}" of issuer "${client.issuer}"`;
}

/** Read and validate a JSON configuration file. */
export function loadConfigFile(path: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ConfigError([
      `cannot read configuration file ${path}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`,
    ]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError([`configuration file ${path} is not valid JSON: ${(cause as Error).message}`]);
  }
  return loadConfig(json);
}

/** JSON Schema of the configuration document, for editors and reviewers. */
export function configJsonSchema(): unknown {
  return z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' });
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.length > 0 ? issue.path.join('.') : '(document)';
  return `${path}: ${issue.message}`;
}

function duplicateKids(keys: readonly PublicJwk[], where: string, problems: string[]): void {
  const seen = new Set<string>();
  for (const [k, jwk] of keys.entries()) {
    if (seen.has(jwk.kid)) problems.push(`${where}.${k}.kid: "${jwk.kid}" is listed twice`);
    seen.add(jwk.kid);
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    if (!(value instanceof Map)) {
      Object.freeze(value);
      for (const v of Object.values(value)) deepFreeze(v);
    } else {
      for (const v of value.values()) deepFreeze(v);
    }
  }
  return value;
}
