/**
 * MESH connections from the pipeline configuration (`mesh` section): secrets and certificate files
 * are resolved here, by reference (an environment variable or a file), when a client is made. Errors
 * name the reference (the variable or the path), never a value.
 */
import { readFileSync } from 'node:fs';
import type { LoadedConfig } from '../config/load.js';
import type { SecretRef } from '../config/schema.js';
import type { KeyService } from '../ports/index.js';
import type { MeshFacts } from '../record.js';
import { attestationKid, attestMeshFacts } from './attestation.js';
import type { MeshClient } from './client.js';
import { MeshConfigError } from './errors.js';
import { HttpMeshClient } from './http-client.js';

export interface SecretSources {
  env: Readonly<Record<string, string | undefined>>;
  readFile: (path: string) => string;
}

const defaultSources: SecretSources = { env: process.env, readFile: (p) => readFileSync(p, 'utf8') };

/** The secret a reference names. */
export function resolveSecret(
  ref: SecretRef | undefined,
  where: string,
  sources: SecretSources = defaultSources,
): string {
  if (ref === undefined) {
    // Optional in the schema because the deployed stack reads Secrets Manager instead.
    throw new MeshConfigError(
      `${where}: required to connect to MESH from this process (give {"env": ...} or {"file": ...})`,
    );
  }
  if ('env' in ref) {
    const value = sources.env[ref.env];
    if (!value) throw new MeshConfigError(`${where}: environment variable ${ref.env} is not set`);
    return value;
  }
  let text: string;
  try {
    text = sources.readFile(ref.file);
  } catch (cause) {
    throw new MeshConfigError(
      `${where}: cannot read ${ref.file} (${(cause as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  const value = text.replace(/\r?\n$/, '');
  if (!value) throw new MeshConfigError(`${where}: ${ref.file} is empty`);
  return value;
}

/** One HTTP MESH client per gateway mailbox, keyed by mailbox. */
export function meshClientsFromConfig(
  config: LoadedConfig,
  sources: SecretSources = defaultSources,
): Map<string, MeshClient> {
  const mesh = config.doc.mesh;
  if (!mesh) throw new MeshConfigError('the configuration has no "mesh" section');
  const sharedKey = resolveSecret(mesh.sharedKey, 'mesh.sharedKey', sources);
  const file = (path: string, where: string) => {
    try {
      return sources.readFile(path);
    } catch (cause) {
      throw new MeshConfigError(
        `${where}: cannot read ${path} (${(cause as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
  };
  const tls = mesh.tls
    ? {
        cert: file(mesh.tls.cert, 'mesh.tls.cert'),
        key: file(mesh.tls.key, 'mesh.tls.key'),
        ...(mesh.tls.ca ? { ca: file(mesh.tls.ca, 'mesh.tls.ca') } : {}),
      }
    : undefined;
  const clients = new Map<string, MeshClient>();
  for (const [i, entry] of mesh.mailboxes.entries()) {
    clients.set(
      entry.mailbox,
      new HttpMeshClient({
        url: mesh.url,
        mailbox: entry.mailbox,
        password: resolveSecret(entry.password, `mesh.mailboxes.${i}.password`, sources),
        sharedKey,
        ...(tls ? { tls } : {}),
      }),
    );
  }
  return clients;
}

/** The mailbox deliveries to `mesh` targets are sent from. */
export function sendingMailbox(config: LoadedConfig): string {
  const mesh = config.doc.mesh;
  if (!mesh) throw new MeshConfigError('the configuration has no "mesh" section');
  return mesh.sendFrom ?? mesh.mailboxes[0]!.mailbox;
}

/** The poller's attestation signer for this configuration's key. */
export function meshAttester(config: LoadedConfig, keys: KeyService): (facts: MeshFacts) => Promise<string> {
  const kid = attestationKid(config);
  return (facts) => attestMeshFacts(keys, kid, facts);
}
