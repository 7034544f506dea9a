/**
 * `itk3 keys init|add|public`: the software keystore of embedded runs (mode 0600), and the public
 * JWKS senders need. (`keys wrap`, for the cached key mode in KMS: keys-wrap.ts.)
 */
import { existsSync } from 'node:fs';
import {
  createKeystore,
  findKey,
  generateKey,
  KEY_ALGS,
  KEY_PURPOSES,
  type KeyAlg,
  type KeyPurpose,
  publicJwk,
  publicJwks,
  readKeystore,
  writeKeystore,
} from '../adapters/local/keystore.js';
import { KID_PATTERN } from '../envelope/contract.js';
import { UsageError } from '../errors.js';

type Write = (line: string) => void;

export interface KeysInitOptions {
  keystore: string;
  recipient?: string[];
  gateway: string;
  recipientAlg: string;
  modulus?: string;
  force?: boolean;
  kid?: string[];
}

export async function keysInit(values: KeysInitOptions, write: Write): Promise<number> {
  if (existsSync(values.keystore) && !values.force) {
    throw new UsageError(
      `${values.keystore} exists; pass --force to replace it (its private keys would be lost)`,
    );
  }
  const recipientAlg = values.recipientAlg;
  if (recipientAlg !== 'RSA-OAEP-256' && recipientAlg !== 'ECDH-ES+A256KW') {
    throw new UsageError('--recipient-alg must be RSA-OAEP-256 or ECDH-ES+A256KW');
  }
  const modulusLength = recipientModulus(recipientAlg, values.modulus) ?? 4096;
  const recipients = values.recipient ?? [];
  if (recipients.length === 0) throw new UsageError('name at least one recipient: --recipient ODS');
  const month = new Date().toISOString().slice(0, 7).replace('-', '');
  for (const ods of [...recipients, values.gateway]) {
    if (!/^[A-Z0-9]{3,10}$/.test(ods))
      throw new UsageError(`"${ods}" is not an ODS code (3–10 upper-case letters or digits)`);
  }
  const chosen = chosenKids(values.kid ?? [], [...recipients, values.gateway]);
  const entries = await Promise.all([
    ...recipients.map((ods) =>
      generateKey(
        'recipient-decrypt',
        recipientAlg,
        chosen.get(ods) ?? `${ods.toLowerCase()}-enc-${month}`,
        ods,
        { modulusLength },
      ),
    ),
    generateKey(
      'response-sign',
      'ES256',
      chosen.get(values.gateway) ?? `${values.gateway.toLowerCase()}-response-${month}`,
      values.gateway,
    ),
  ]);
  const ks = createKeystore(entries);
  writeKeystore(values.keystore, ks);
  process.stderr.write(`keystore written to ${values.keystore} (mode 0600); public JWKS follows\n`);
  write(JSON.stringify(publicJwks(ks), null, 2));
  return 0;
}

export interface KeysAddOptions {
  keystore: string;
  purpose?: string;
  alg?: string;
  owner?: string;
  kid?: string;
  modulus?: string;
}

export async function keysAdd(values: KeysAddOptions, write: Write): Promise<number> {
  const purpose = values.purpose as KeyPurpose;
  const alg = values.alg as KeyAlg;
  if (!KEY_PURPOSES.includes(purpose))
    throw new UsageError(`--purpose must be one of ${KEY_PURPOSES.join(', ')}`);
  if (!KEY_ALGS.includes(alg)) throw new UsageError(`--alg must be one of ${KEY_ALGS.join(', ')}`);
  if (!values.owner) throw new UsageError('--owner is required (issuer id or ODS code)');
  const ks = existsSync(values.keystore) ? readKeystore(values.keystore) : createKeystore([]);
  const kid = values.kid ?? `${values.owner.toLowerCase()}-${purpose}-${Date.now().toString(36)}`;
  if (findKey(ks, kid)) throw new UsageError(`kid ${kid} already exists in ${values.keystore}`);
  const modulusLength = recipientModulus(alg, values.modulus);
  const entry = await generateKey(purpose, alg, kid, values.owner, modulusLength ? { modulusLength } : {});
  writeKeystore(values.keystore, createKeystore([...ks.keys, entry]));
  write(JSON.stringify(publicJwk(entry), null, 2));
  return 0;
}

export function keysPublic(values: { keystore: string }, write: Write): number {
  write(JSON.stringify(publicJwks(readKeystore(values.keystore)), null, 2));
  return 0;
}

/** `--modulus`: RSA only, 2048, 3072 or 4096; `undefined` when not given. */
function recipientModulus(alg: string, modulus: string | undefined): number | undefined {
  if (modulus === undefined) return undefined;
  if (alg === 'ES256' || alg === 'ECDH-ES+A256KW')
    throw new UsageError(`--modulus does not apply to ${alg} (P-256)`);
  const bits = Number(modulus);
  if (![2048, 3072, 4096].includes(bits)) throw new UsageError('--modulus must be 2048, 3072 or 4096');
  return bits;
}

/** `--kid ODS=KID` values of `keys init`, each naming one of `owners` once. */
function chosenKids(values: readonly string[], owners: readonly string[]): Map<string, string> {
  const chosen = new Map<string, string>();
  for (const value of values) {
    const [ods, kid, ...extra] = value.split('=');
    if (!ods || !kid || extra.length > 0) throw new UsageError(`--kid ${value}: expected ODS=KID`);
    if (!owners.includes(ods)) {
      throw new UsageError(`--kid ${value}: ${ods} is neither a --recipient nor the --gateway`);
    }
    if (!KID_PATTERN.test(kid)) throw new UsageError(`--kid ${value}: a key id is 1–64 of A-Z a-z 0-9 . _ -`);
    if (chosen.has(ods)) throw new UsageError(`--kid: ${ods} is given twice`);
    if ([...chosen.values()].includes(kid)) throw new UsageError(`--kid: key id ${kid} is given twice`);
    chosen.set(ods, kid);
  }
  return chosen;
}
