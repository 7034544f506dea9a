/**
 * Checks of a valid configuration against the things around it, for `itk3 config validate`: the
 * keystore it will run with, and the clock. A recipient or response-signing key id the keystore
 * lacks would otherwise show only at run time, with every message dead-lettering as `UNEXPECTED`.
 */
import { grantExpiry } from '../policy/index.js';
import type { LoadedConfig } from './load.js';

/** What these checks need of a keystore entry (lib/adapters/local/keystore.ts). */
export interface KeystoreKey {
  kid: string;
  purpose: string;
}

/** Problems: configured key ids the keystore does not hold with the right purpose. */
export function keystoreProblems(
  config: LoadedConfig,
  keys: readonly KeystoreKey[],
  where: string,
): string[] {
  const byKid = new Map(keys.map((k) => [k.kid, k]));
  const problems: string[] = [];
  const need = (kid: string, purpose: string, path: string) => {
    const key = byKid.get(kid);
    if (!key) problems.push(`${path}: "${kid}" is not in the keystore ${where}`);
    else if (key.purpose !== purpose) {
      problems.push(`${path}: "${kid}" is a ${key.purpose} key in ${where}, not a ${purpose} key`);
    }
  };
  need(config.doc.responseSigning.kid, 'response-sign', 'responseSigning.kid');
  for (const [i, recipient] of config.doc.recipients.entries()) {
    for (const [k, key] of recipient.keys.entries()) {
      need(key.kid, 'recipient-decrypt', `recipients.${i}.keys.${k}.kid`);
    }
  }
  return problems;
}

/** Warnings: delegation grants that have already expired (they can no longer allow anything). */
export function expiredGrantWarnings(config: LoadedConfig, now: number): string[] {
  return config.doc.delegations.flatMap((grant, i) =>
    grantExpiry(grant) <= now
      ? [`delegations.${i} "${grant.id}" expired on ${grant.expires}: it no longer allows anything`]
      : [],
  );
}
