import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import * as z from 'zod';
import { MeshConfigError } from '../../mesh/errors.js';
import { type Clock, systemClock } from '../../ports/index.js';
import { awsErrorName } from './errors.js';

/**
 * The JSON a mailbox's secret holds (docs/DEPLOY.md, "MESH poller"). PEM text with real newlines
 * (or `\n` escapes, as JSON writes them).
 */
const PEM = z.string().regex(/-----BEGIN [A-Z0-9 ]+-----/, 'must be PEM text');
const MeshSecretSchema = z.object({
  /** The mailbox password NHS England issued. */
  password: z.string().min(1),
  /** The environment-wide MESH shared secret (keys the NHSMESH HMAC). */
  sharedKey: z.string().min(1),
  /** The NHS-issued client certificate of the mailbox's endpoint (PEM). Required off loopback. */
  clientCert: PEM.optional(),
  /** Its private key (PEM). */
  clientKey: PEM.optional(),
  /** The CA bundle to trust for MESH (PEM); else the one the deployment bundles, else the system store. */
  caBundle: PEM.optional(),
});

/** The credential part of a MESH connection (lib/mesh/options.ts), for one mailbox. */
export interface MeshCredentials {
  password: string;
  sharedKey: string;
  tls?: { cert: string; key: string; ca?: string };
}

/** Where a poller gets a mailbox's credentials. */
export interface MeshCredentialSource {
  credentials(mailbox: string): Promise<MeshCredentials>;
}

/**
 * Parse a mailbox secret. Errors name the fields and rules, never a value: the text is a secret.
 *
 * @throws {MeshConfigError} for text that is not the JSON object above, or a half-filled one
 */
export function parseMeshSecret(text: string, mailbox: string): MeshCredentials {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new MeshConfigError(`the MESH secret of mailbox ${mailbox} is not JSON (see docs/DEPLOY.md)`);
  }
  const parsed = MeshSecretSchema.safeParse(json);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `${i.path.join('.') || '(secret)'}: ${i.message}`);
    throw new MeshConfigError(
      `the MESH secret of mailbox ${mailbox} is not filled in correctly: ${fields.join('; ')} (see docs/DEPLOY.md)`,
    );
  }
  const s = parsed.data;
  if ((s.clientCert === undefined) !== (s.clientKey === undefined)) {
    throw new MeshConfigError(
      `the MESH secret of mailbox ${mailbox} has only one of clientCert and clientKey: give both`,
    );
  }
  return {
    password: s.password,
    sharedKey: s.sharedKey,
    ...(s.clientCert && s.clientKey
      ? { tls: { cert: s.clientCert, key: s.clientKey, ...(s.caBundle ? { ca: s.caBundle } : {}) } }
      : {}),
  };
}

/**
 * Mailbox credentials from Secrets Manager, one secret per mailbox, read once per container and
 * then again after `ttlMs` (so a rotated password is picked up without a deployment). Values are
 * held only in memory and never logged; errors carry the mailbox and the AWS error name only.
 *
 * @example
 * ```ts
 * const source = new SecretsManagerMeshCredentials(new SecretsManagerClient({}), { X26ABC1: secretArn });
 * const { password, sharedKey, tls } = await source.credentials('X26ABC1');
 * ```
 */
export class SecretsManagerMeshCredentials implements MeshCredentialSource {
  readonly #client: SecretsManagerClient;
  readonly #secretIds: ReadonlyMap<string, string>;
  readonly #ttlMs: number;
  readonly #clock: Clock;
  readonly #cache = new Map<string, { at: number; value: Promise<MeshCredentials> }>();

  /**
   * @param secretIds mailbox id → secret ARN or name; a mailbox not listed is refused
   */
  constructor(
    client: SecretsManagerClient,
    secretIds: Readonly<Record<string, string>>,
    opts: { ttlMs?: number; clock?: Clock } = {},
  ) {
    this.#client = client;
    this.#secretIds = new Map(Object.entries(secretIds).map(([m, id]) => [m.toUpperCase(), id]));
    this.#ttlMs = opts.ttlMs ?? 300_000;
    this.#clock = opts.clock ?? systemClock;
  }

  credentials(mailbox: string): Promise<MeshCredentials> {
    const id = mailbox.toUpperCase();
    const secretId = this.#secretIds.get(id);
    if (secretId === undefined) {
      return Promise.reject(new MeshConfigError(`mailbox ${id} is not one this poller is configured for`));
    }
    const now = this.#clock.now();
    const cached = this.#cache.get(id);
    if (cached && now - cached.at < this.#ttlMs) return cached.value;
    const value = this.#load(id, secretId);
    this.#cache.set(id, { at: now, value });
    // A failed read is not cached: the next pass asks again.
    value.catch(() => {
      if (this.#cache.get(id)?.value === value) this.#cache.delete(id);
    });
    return value;
  }

  async #load(mailbox: string, secretId: string): Promise<MeshCredentials> {
    let text: string | undefined;
    try {
      const out = await this.#client.send(new GetSecretValueCommand({ SecretId: secretId }));
      text = out.SecretString;
    } catch (cause) {
      throw new MeshConfigError(
        `could not read the MESH secret of mailbox ${mailbox} (${awsErrorName(cause) ?? 'unknown error'})`,
      );
    }
    if (text === undefined) {
      throw new MeshConfigError(`the MESH secret of mailbox ${mailbox} has no SecretString`);
    }
    return parseMeshSecret(text, mailbox);
  }
}
