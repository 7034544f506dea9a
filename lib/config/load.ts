import { readFileSync } from 'node:fs';
import { z } from 'zod';
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
    throw new ConfigError(parsed.error.issues.map(formatIssue));
  }
  const doc = parsed.data;
  const problems: string[] = [];

  const issuersByIss = new Map<string, IssuerConfig>();
  const issuerIds = new Set<string>();
  for (const [i, issuer] of doc.issuers.entries()) {
    if (issuersByIss.has(issuer.issuer))
      problems.push(`issuers.${i}.issuer: "${issuer.issuer}" is listed twice`);
    if (issuerIds.has(issuer.id)) problems.push(`issuers.${i}.id: "${issuer.id}" is listed twice`);
    issuersByIss.set(issuer.issuer, issuer);
    issuerIds.add(issuer.id);
    duplicateKids(issuer.keys, `issuers.${i}.keys`, problems);
  }

  const sendersByOds = new Map<string, SenderConfig>();
  const senderKeyByKid = new Map<string, { ods: string; jwk: PublicJwk }>();
  for (const [i, sender] of doc.senders.entries()) {
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
  for (const [i, recipient] of doc.recipients.entries()) {
    if (recipientsByOds.has(recipient.ods))
      problems.push(`recipients.${i}.ods: "${recipient.ods}" is listed twice`);
    recipientsByOds.set(recipient.ods, recipient);
    for (const [k, key] of recipient.keys.entries()) {
      if (recipientByKid.has(key.kid))
        problems.push(`recipients.${i}.keys.${k}.kid: "${key.kid}" is listed twice`);
      recipientByKid.set(key.kid, recipient.ods);
    }
  }
  if (recipientByKid.has(doc.responseSigning.kid)) {
    problems.push('responseSigning.kid: must differ from every recipient key id');
  }

  const ruleIds = new Set<string>();
  for (const [i, rule] of doc.rules.entries()) {
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
  for (const [i, grant] of doc.delegations.entries()) {
    if (grantIds.has(grant.id)) problems.push(`delegations.${i}.id: "${grant.id}" is listed twice`);
    grantIds.add(grant.id);
    for (const org of grant.onBehalfOf) {
      if (!sendersByOds.has(org))
        problems.push(`delegations.${i}.onBehalfOf: "${org}" is not a configured sender`);
    }
  }

  if (problems.length > 0) throw new ConfigError(problems);

  return deepFreeze({ doc, issuersByIss, sendersByOds, recipientsByOds, recipientByKid, senderKeyByKid });
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
