/**
 * Delivery through MESH in the AWS runtimes (lib/adapters/aws/mesh-delivery.ts): the real
 * MeshDeliverer, the real Secrets Manager credential source (SDK mocked) and the real composition
 * root, with mailboxes held in memory in place of MESH. A `mesh` target is sent from the gateway
 * mailbox with that mailbox's secret; other targets go to the AWS deliverer; a retried delivery is
 * not sent twice; a rotated secret is picked up; a stack and configuration that disagree are refused.
 */

import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AwsDeliverer } from '../../../lib/adapters/aws/aws-deliverer.js';
import { awsPortsFromEnv, createAwsClients } from '../../../lib/adapters/aws/clients.js';
import { MESH_POLL_ENV } from '../../../lib/adapters/aws/deployment-names.js';
import { awsMeshDeliverer, SecretBackedMeshClient } from '../../../lib/adapters/aws/mesh-delivery.js';
import type { AwsMeshConnection } from '../../../lib/adapters/aws/mesh-poll-job.js';
import { SecretsManagerMeshCredentials } from '../../../lib/adapters/aws/mesh-secrets.js';
import { MemoryOnceStore } from '../../../lib/adapters/local/memory-stores.js';
import type { LoadedConfig } from '../../../lib/config/load.js';
import { MeshConfigError, MeshDeliverer } from '../../../lib/mesh/index.js';
import type { Deliverer, DeliveryTarget } from '../../../lib/ports/index.js';
import { VirtualClock } from '../../../lib/runtime/embedded.js';
import { MemoryMeshNetwork } from '../../support/memory-mesh.js';
import { configWith, testWorld } from '../../support/world.js';

const GATEWAY = 'X26GW01';
const PARTNER = 'X26PT01';
const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-2:123456789012:secret:itk3/mesh/X26GW01-AbCdEf';
const secret = (password: string) => JSON.stringify({ password, sharedKey: 'shared-key-do-not-print' });

const sm = mockClient(SecretsManagerClient);
afterEach(() => sm.reset());

let config: LoadedConfig;
beforeAll(async () => {
  const world = await testWorld();
  // AWS configuration: no secret references, the mailbox secret holds the credentials.
  config = configWith(world, {
    mesh: { url: 'https://mesh.test.example', mailboxes: [{ mailbox: GATEWAY, recipients: ['A83627'] }] },
  });
});

/** Records what reached the inner (AWS) deliverer. */
class RecordingDeliverer implements Deliverer {
  readonly delivered: { target: DeliveryTarget; name: string }[] = [];
  async deliver(target: DeliveryTarget, name: string): Promise<string> {
    this.delivered.push({ target, name });
    return `inner://${name}`;
  }
}

function world(clock = new VirtualClock()) {
  const net = new MemoryMeshNetwork();
  const connected: Record<string, unknown>[] = [];
  const connection: AwsMeshConnection = {
    url: 'https://mesh.test.example',
    mailboxes: [GATEWAY],
    credentials: new SecretsManagerMeshCredentials(
      new SecretsManagerClient({ region: 'eu-west-2' }),
      { [GATEWAY]: SECRET_ARN },
      { clock, ttlMs: 60_000 },
    ),
  };
  const connect = (options: Record<string, unknown>) => {
    connected.push(options);
    return Object.assign(net.client(String(options.mailbox)), { close: () => undefined });
  };
  const inner = new RecordingDeliverer();
  const once = new MemoryOnceStore();
  const deliverer = awsMeshDeliverer(config, inner, once, connection, connect);
  return { net, connected, connection, connect, inner, deliverer, clock };
}

const meshTarget: DeliveryTarget = {
  type: 'mesh',
  mailbox: PARTNER,
  workflowId: 'ITK3_RESPONSE',
  localId: 't-1',
};
const bytes = new TextEncoder().encode('{"resourceType":"Bundle"}');

describe('awsMeshDeliverer', () => {
  it('sends a mesh target from the gateway mailbox with the credentials in its secret', async () => {
    sm.on(GetSecretValueCommand, { SecretId: SECRET_ARN }).resolves({ SecretString: secret('pw-1') });
    const w = world();
    expect(w.deliverer).toBeInstanceOf(MeshDeliverer);
    const where = await w.deliverer.deliver(meshTarget, 'trace-1.json', bytes, 'application/fhir+json');
    expect(where).toMatch(new RegExp(`^mesh://${PARTNER}/`));
    const received = w.net.drainInbox(PARTNER);
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ from: GATEWAY, workflowId: 'ITK3_RESPONSE', localId: 't-1' });
    expect(Buffer.from(received[0]!.body).equals(Buffer.from(bytes))).toBe(true);
    expect(w.connected).toEqual([
      {
        url: 'https://mesh.test.example',
        mailbox: GATEWAY,
        password: 'pw-1',
        sharedKey: 'shared-key-do-not-print',
      },
    ]);
    expect(w.inner.delivered).toEqual([]);
  });

  it('sends a retried delivery once, and passes other targets to the AWS deliverer', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: secret('pw-1') });
    const w = world();
    const first = await w.deliverer.deliver(meshTarget, 'trace-2.json', bytes, 'application/fhir+json');
    const again = await w.deliverer.deliver(meshTarget, 'trace-2.json', bytes, 'application/fhir+json');
    expect(again).toBe(first);
    expect(w.net.drainInbox(PARTNER)).toHaveLength(1);
    const folder: DeliveryTarget = { type: 'folder', path: 'delivered/A83627' };
    expect(await w.deliverer.deliver(folder, 'x.json', bytes, 'application/json')).toBe('inner://x.json');
    expect(w.inner.delivered).toEqual([{ target: folder, name: 'x.json' }]);
  });

  it('reads no secret until it sends, and a new client once the secret changed and the cache lapsed', async () => {
    sm.on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: secret('pw-1') })
      .resolves({ SecretString: secret('pw-2') });
    const w = world();
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(0);
    await w.deliverer.deliver(meshTarget, 'a.json', bytes, 'application/json');
    await w.deliverer.deliver(meshTarget, 'b.json', bytes, 'application/json');
    expect(w.connected.map((c) => c.password)).toEqual(['pw-1']);
    w.clock.advanceBy(61_000);
    await w.deliverer.deliver(meshTarget, 'c.json', bytes, 'application/json');
    expect(w.connected.map((c) => c.password)).toEqual(['pw-1', 'pw-2']);
    expect(w.net.drainInbox(PARTNER)).toHaveLength(3);
  });

  it('fails the delivery transiently, naming the mailbox only, when the secret cannot be read', async () => {
    sm.on(GetSecretValueCommand).rejects(
      Object.assign(new Error('denied'), { name: 'AccessDeniedException' }),
    );
    const w = world();
    const error = await w.deliverer.deliver(meshTarget, 'd.json', bytes, 'application/json').catch((e) => e);
    expect(error).toMatchObject({ code: 'MESH_SEND_FAILED' });
    expect(String(error.message)).toContain(PARTNER);
  });

  it('is the AWS deliverer alone without a MESH connection, and refuses a stack the configuration disagrees with', async () => {
    const inner = new RecordingDeliverer();
    expect(awsMeshDeliverer(config, inner, new MemoryOnceStore(), undefined)).toBe(inner);
    const w = world();
    const world0 = await testWorld();
    expect(() =>
      awsMeshDeliverer(configWith(world0, {}), inner, new MemoryOnceStore(), w.connection),
    ).toThrow(MeshConfigError);
    expect(() =>
      awsMeshDeliverer(config, inner, new MemoryOnceStore(), { ...w.connection, mailboxes: ['X26OTHER'] }),
    ).toThrow(`the sending MESH mailbox ${GATEWAY} has no secret`);
  });
});

describe('SecretBackedMeshClient', () => {
  it('acts for its mailbox, upper case, and closes the client it made', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: secret('pw-1') });
    const w = world();
    let closed = 0;
    const client = new SecretBackedMeshClient(GATEWAY.toLowerCase(), w.connection, (o) =>
      Object.assign(w.net.client(String(o.mailbox)), { close: () => void closed++ }),
    );
    expect(client.mailbox).toBe(GATEWAY);
    w.net.deliver(PARTNER, GATEWAY, bytes, { workflowId: 'W' });
    const page = await client.listInbox();
    expect(page.messageIds).toHaveLength(1);
    client.close();
    expect(closed).toBe(1);
  });
});

describe('awsPortsFromEnv', () => {
  const clients = createAwsClients({
    endpoint: 'http://127.0.0.1:9',
    credentials: { accessKeyId: 't', secretAccessKey: 't' },
  });
  it('wraps the AWS deliverer for MESH where the function has the mailbox secrets (the deliver stage)', () => {
    const env = {
      [MESH_POLL_ENV.url]: 'https://mesh.test.example',
      [MESH_POLL_ENV.mailboxes]: JSON.stringify({ [GATEWAY]: SECRET_ARN }),
      AWS_REGION: 'eu-west-2',
    };
    expect(awsPortsFromEnv(config, { env, clients }).deliverer).toBeInstanceOf(MeshDeliverer);
    expect(awsPortsFromEnv(config, { env: { AWS_REGION: 'eu-west-2' }, clients }).deliverer).toBeInstanceOf(
      AwsDeliverer,
    );
  });
});
