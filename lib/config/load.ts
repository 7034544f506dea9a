import { readFileSync } from 'node:fs';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import {
  ConfigSchema,
  type IssuerConfig,
  type PipelineConfig,
  type PublicJwk,
  type RecipientConfig,
  type SenderConfig,
} from './schema.js';

/** A validated configuration with look-up indexes. Frozen: stages never change it. */
export interface LoadedConfig {
  readonly doc: PipelineConfig;
  readonly issuersByIss: ReadonlyMap<string, IssuerConfig>;
  readonly sendersByOds: ReadonlyMap<string, SenderConfig>;
  readonly recipientsByOds: ReadonlyMap<string, RecipientConfig>;
  /** Recipient key id → owning recipient ODS. */
  readonly recipientByKid: ReadonlyMap<string, string>;
  /** Sender signing key id → owning sender ODS and the key. */
  readonly senderKeyByKid: ReadonlyMap<string, { ods: string; jwk: PublicJwk }>;
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
    problems.push(...crossReference(bestEffortSections(input)).problems);
    throw new ConfigError(problems);
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
  });
  if (problems.length > 0) throw new ConfigError(problems);
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
  return {
    issuers: valid('issuers', shape.issuers.element),
    senders: valid('senders', shape.senders.element),
    recipients: valid('recipients', shape.recipients.element),
    rules: valid('rules', shape.rules.element),
    delegations: valid('delegations', shape.delegations.unwrap().element),
    responseSigningKid: signing.success ? signing.data.kid : undefined,
  };
}

/** Uniqueness and cross-references between sections; builds the look-up indexes on the way. */
function crossReference(sections: Sections): Omit<LoadedConfig, 'doc'> & { problems: string[] } {
  const problems: string[] = [];

  const issuersByIss = new Map<string, IssuerConfig>();
  const issuerIds = new Set<string>();
  for (const [i, issuer] of sections.issuers) {
    if (issuersByIss.has(issuer.issuer))
      problems.push(`issuers.${i}.issuer: "${issuer.issuer}" is listed twice`);
    if (issuerIds.has(issuer.id)) problems.push(`issuers.${i}.id: "${issuer.id}" is listed twice`);
    issuersByIss.set(issuer.issuer, issuer);
    issuerIds.add(issuer.id);
    duplicateKids(issuer.keys, `issuers.${i}.keys`, problems);
  }

  const sendersByOds = new Map<string, SenderConfig>();
  const senderKeyByKid = new Map<string, { ods: string; jwk: PublicJwk }>();
  for (const [i, sender] of sections.senders) {
    if (sendersByOds.has(sender.ods)) problems.push(`senders.${i}.ods: "${sender.ods}" is listed twice`);
    sendersByOds.set(sender.ods, sender);
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
    if (!sender) problems.push(`rules.${i}.sender.ods: "${rule.sender.ods}" is not a configured sender`);
    for (const client of rule.sender.clients ?? []) {
      if (sender && !sender.clients.includes(client)) {
        problems.push(`rules.${i}.sender.clients: "${client}" is not a client of sender ${rule.sender.ods}`);
      }
    }
    for (const r of rule.recipients) {
      if (!recipientsByOds.has(r))
        problems.push(`rules.${i}.recipients: "${r}" is not a configured recipient`);
    }
  }

  const grantIds = new Set<string>();
  for (const [i, grant] of sections.delegations) {
    if (grantIds.has(grant.id)) problems.push(`delegations.${i}.id: "${grant.id}" is listed twice`);
    grantIds.add(grant.id);
    for (const org of grant.onBehalfOf) {
      if (!sendersByOds.has(org))
        problems.push(`delegations.${i}.onBehalfOf: "${org}" is not a configured sender`);
    }
  }

  return { problems, issuersByIss, sendersByOds, recipientsByOds, recipientByKid, senderKeyByKid };
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
