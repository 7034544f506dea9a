/**
 * The scheduled AWS poll job (lib/adapters/aws/mesh-poll-job.ts) on the real lease adapter (over an
 * in-memory table that evaluates its conditional writes), the real Secrets Manager credential
 * source (SDK mocked), the real poller and the local stores and queue, with a scripted mailbox in
 * place of MESH: one pass under the lease, skipped while another holds it, stopped in time before
 * the deadline, the lease given back on failure, secrets cached and never shown.
 */

import { inspect } from 'node:util';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MESH_POLL_ENV } from '../../../lib/adapters/aws/deployment-names.js';
import { DynamoLease } from '../../../lib/adapters/aws/dynamo-lease.js';
import {
  type MeshPollSetup,
  meshPollSetupFromEnv,
  runMeshPollJob,
} from '../../../lib/adapters/aws/mesh-poll-job.js';
import { parseMeshSecret, SecretsManagerMeshCredentials } from '../../../lib/adapters/aws/mesh-secrets.js';
import {
  MemoryAuditLog,
  MemoryBlobStore,
  MemoryOnceStore,
} from '../../../lib/adapters/local/memory-stores.js';
import {
  MeshAuthError,
  type MeshClient,
  MeshConfigError,
  type MeshDownloadedMessage,
  MeshError,
  type MeshPollerPorts,
} from '../../../lib/mesh/index.js';
import { VirtualClock } from '../../../lib/runtime/embedded.js';
import { MemoryQueue } from '../../../lib/runtime/memory-queue.js';
import { leaseTable } from './lease-table.js';

const MAILBOX = 'X26ABC1';
const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-2:123456789012:secret:itk3/mesh/X26ABC1-AbCdEf';
const PASSWORD = 'mailbox-password-do-not-print';
const SHARED_KEY = 'shared-key-do-not-print';
const CA = '-----BEGIN CERTIFICATE-----\nMIIBdeployment\n-----END CERTIFICATE-----\n';

/** A mailbox in memory; each download takes `downloadMs` of virtual time. */
class ScriptedMailbox implements MeshClient {
  readonly mailbox = MAILBOX;
  readonly inbox = new Map<string, MeshDownloadedMessage>();
  readonly acknowledged: string[] = [];
  closed = false;
  failWith: MeshError | undefined;
  constructor(
    private readonly clock: VirtualClock,
    private readonly downloadMs = 0,
  ) {}
  add(body: string): string {
    const messageId = `20261203080000${String(this.inbox.size).padStart(4, '0')}_ABC123`;
    this.inbox.set(messageId, {
      messageId,
      messageType: 'DATA',
      from: 'X26GP01',
      to: MAILBOX,
      workflowId: 'GPFED_CONSULT_REPORT',
      localId: undefined,
      subject: undefined,
      fileName: 'report.xml',
      contentType: 'application/fhir+xml',
      totalChunks: 1,
      body: new TextEncoder().encode(body),
      wasCompressed: false,
      report: undefined,
    });
    return messageId;
  }
  async handshake(): Promise<void> {}
  async listInbox() {
    if (this.failWith) throw this.failWith;
    return { messageIds: [...this.inbox.keys()], next: undefined, approxInboxCount: this.inbox.size };
  }
  async listInboxRich(): Promise<never> {
    throw new Error('not used by the poller');
  }
  async download(messageId: string): Promise<MeshDownloadedMessage> {
    this.clock.advanceBy(this.downloadMs);
    const m = this.inbox.get(messageId);
    if (!m) throw new MeshError('permanent', 'gone', { status: 410 });
    return m;
  }
  async acknowledge(messageId: string): Promise<void> {
    this.inbox.delete(messageId);
    this.acknowledged.push(messageId);
  }
  async send(): Promise<never> {
    throw new Error('not used');
  }
  async track(): Promise<never> {
    throw new Error('not used');
  }
  close(): void {
    this.closed = true;
  }
}

const secrets = mockClient(SecretsManagerClient);
let clock: VirtualClock;
let queue: MemoryQueue;
let ports: MeshPollerPorts;
let table: ReturnType<typeof leaseTable>;
let mesh: ScriptedMailbox;
let connected: Record<string, unknown>[];

function setup(overrides: Partial<MeshPollSetup> = {}): MeshPollSetup {
  return {
    url: 'https://mesh.test.example',
    mailboxes: [MAILBOX],
    credentials: new SecretsManagerMeshCredentials(
      new SecretsManagerClient({ region: 'eu-west-2' }),
      { [MAILBOX]: SECRET_ARN },
      { clock },
    ),
    leases: new DynamoLease(table.client, 'itk3-once', clock),
    caBundle: CA,
    connect: (options) => {
      connected.push(options);
      return mesh;
    },
    ...overrides,
  };
}

const secretText = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    password: PASSWORD,
    sharedKey: SHARED_KEY,
    clientCert: '-----BEGIN CERTIFICATE-----\nMIIBclient\n-----END CERTIFICATE-----\n',
    clientKey: '-----BEGIN PRIVATE KEY-----\nMIIBkey\n-----END PRIVATE KEY-----\n',
    ...extra,
  });

beforeEach(() => {
  secrets.reset();
  secrets.on(GetSecretValueCommand).resolves({ SecretString: secretText() });
  table = leaseTable();
  clock = new VirtualClock(Date.parse('2026-12-03T08:00:00Z'));
  queue = new MemoryQueue({ name: 'inbound', visibilityTimeoutSeconds: 30 }, clock);
  ports = {
    queues: { sendInbound: async (body, attributes) => queue.send(body, { ...attributes }) },
    once: new MemoryOnceStore(clock),
    blobs: new MemoryBlobStore(),
    audit: new MemoryAuditLog(),
    clock,
  };
  mesh = new ScriptedMailbox(clock);
  connected = [];
});
afterEach(() => table.ddb.restore());

describe('runMeshPollJob', () => {
  it('polls under the mailbox lease with the secret’s credentials, then gives the lease back', async () => {
    const ids = [mesh.add('<Bundle/>'), mesh.add('{"resourceType":"Bundle"}')];
    const result = await runMeshPollJob('x26abc1', setup(), ports, { owner: 'req-1', remainingMs: 300_000 });

    expect(result).toMatchObject({
      mailbox: MAILBOX,
      outcome: 'polled',
      outOfTime: false,
      leaseReleased: true,
    });
    if (result.outcome !== 'polled') throw new Error('expected a pass');
    expect(result.summary.enqueued.map((e) => e.meshMessageId)).toEqual(ids);
    expect(queue.peekAll().map((m) => m.attributes['Mex-MessageID'])).toEqual(ids);
    expect(mesh.acknowledged).toEqual(ids);
    expect(mesh.closed).toBe(true);
    expect(table.items.size).toBe(0); // released
    // The lease was taken for the remaining time plus the margin, in the mailbox's own item.
    const put = table.ddb.calls()[0]?.args[0].input as { Item: Record<string, { S?: string; N?: string }> };
    expect(put.Item.k?.S).toBe('lease#mesh#X26ABC1');
    expect(Number(put.Item.expiresAt?.N)).toBe(Date.parse('2026-12-03T08:00:00Z') / 1000 + 330);
    // The connection: the secret's credentials, the deployment's CA bundle since the secret has none.
    expect(connected).toEqual([
      {
        url: 'https://mesh.test.example',
        mailbox: MAILBOX,
        password: PASSWORD,
        sharedKey: SHARED_KEY,
        tls: { cert: expect.stringContaining('MIIBclient'), key: expect.stringContaining('MIIBkey'), ca: CA },
      },
    ]);
    expect(secrets.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({ SecretId: SECRET_ARN });
  });

  it('skips a mailbox another invocation is polling, without reading its secret or calling MESH', async () => {
    mesh.add('<Bundle/>');
    const leases = new DynamoLease(table.client, 'itk3-once', clock);
    await leases.acquire('lease#mesh#X26ABC1', 'req-busy', 330);

    const result = await runMeshPollJob(MAILBOX, setup(), ports, { owner: 'req-2', remainingMs: 300_000 });
    expect(result).toEqual({
      mailbox: MAILBOX,
      outcome: 'locked',
      holder: 'req-busy',
      expiresAtSeconds: Date.parse('2026-12-03T08:00:00Z') / 1000 + 330,
    });
    expect(secrets.commandCalls(GetSecretValueCommand)).toHaveLength(0);
    expect(connected).toHaveLength(0);
    expect(queue.peekAll()).toHaveLength(0);
    expect(table.items.get('lease#mesh#X26ABC1')?.v?.S).toBe('req-busy'); // untouched
  });

  it('stops taking messages before the function deadline; the rest wait in MESH for the next pass', async () => {
    mesh = new ScriptedMailbox(clock, 40_000); // each download takes 40 s
    const ids = Array.from({ length: 6 }, (_, i) => mesh.add(`<Bundle><id value="${i}"/></Bundle>`));
    // 200 s left, stop 90 s before the end: downloads may start until 110 s in.
    const result = await runMeshPollJob(MAILBOX, setup(), ports, { owner: 'req-3', remainingMs: 200_000 });

    if (result.outcome !== 'polled') throw new Error('expected a pass');
    expect(result.outOfTime).toBe(true);
    expect(result.summary.stopped?.reason).toBe('transient-failure');
    expect(result.summary.enqueued.map((e) => e.meshMessageId)).toEqual(ids.slice(0, 3));
    expect(mesh.acknowledged).toEqual(ids.slice(0, 3));
    expect([...mesh.inbox.keys()]).toEqual(ids.slice(3));
    expect(result.leaseReleased).toBe(true);

    // The next pass takes the rest.
    const next = await runMeshPollJob(MAILBOX, setup(), ports, { owner: 'req-4', remainingMs: 300_000 });
    if (next.outcome !== 'polled') throw new Error('expected a pass');
    expect(next.summary.enqueued.map((e) => e.meshMessageId)).toEqual(ids.slice(3));
    expect(queue.peekAll()).toHaveLength(6);
  });

  it('gives the lease back and fails the invocation when MESH refuses the credentials', async () => {
    mesh.failWith = new MeshAuthError(MAILBOX, 403);
    const error = await runMeshPollJob(MAILBOX, setup(), ports, {
      owner: 'req-5',
      remainingMs: 300_000,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MeshAuthError);
    expect(table.items.size).toBe(0);
    expect(mesh.closed).toBe(true);
  });

  it('refuses a mailbox it is not configured for, before taking any lease', async () => {
    await expect(
      runMeshPollJob('X26OTHER', setup(), ports, { owner: 'req-6', remainingMs: 300_000 }),
    ).rejects.toThrow(new MeshConfigError('mailbox X26OTHER is not one this poller is configured for'));
    expect(table.ddb.calls()).toHaveLength(0);
  });

  it('prefers the CA bundle of the secret, and works without a client certificate (loopback MESH)', async () => {
    secrets.on(GetSecretValueCommand).resolves({
      SecretString: secretText({
        caBundle: '-----BEGIN CERTIFICATE-----\nMIIBsecret\n-----END CERTIFICATE-----',
      }),
    });
    await runMeshPollJob(MAILBOX, setup(), ports, { owner: 'a', remainingMs: 300_000 });
    expect(connected[0]).toMatchObject({ tls: { ca: expect.stringContaining('MIIBsecret') } });

    secrets.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ password: PASSWORD, sharedKey: SHARED_KEY }),
    });
    const plain = new SecretsManagerMeshCredentials(new SecretsManagerClient({}), { [MAILBOX]: SECRET_ARN });
    expect(await plain.credentials(MAILBOX)).toEqual({ password: PASSWORD, sharedKey: SHARED_KEY });
  });
});

describe('Secrets Manager mailbox credentials', () => {
  it('reads a secret once per container and again after the cache TTL; a failed read is not cached', async () => {
    const source = new SecretsManagerMeshCredentials(
      new SecretsManagerClient({ region: 'eu-west-2' }),
      { [MAILBOX]: SECRET_ARN },
      { clock, ttlMs: 300_000 },
    );
    await source.credentials(MAILBOX);
    clock.advanceBy(299_000);
    await source.credentials('x26abc1');
    expect(secrets.commandCalls(GetSecretValueCommand)).toHaveLength(1);
    clock.advanceBy(1_000);
    await source.credentials(MAILBOX);
    expect(secrets.commandCalls(GetSecretValueCommand)).toHaveLength(2);

    clock.advanceBy(300_000);
    secrets
      .on(GetSecretValueCommand)
      .rejects(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }));
    await expect(source.credentials(MAILBOX)).rejects.toThrow(
      'could not read the MESH secret of mailbox X26ABC1 (AccessDeniedException)',
    );
    secrets.on(GetSecretValueCommand).resolves({ SecretString: secretText() });
    expect((await source.credentials(MAILBOX)).password).toBe(PASSWORD);
  });

  it('names what is missing in a placeholder or half-filled secret, never a value', () => {
    const placeholder = JSON.stringify({ placeholder: 'x'.repeat(32) });
    expect(() => parseMeshSecret(placeholder, MAILBOX)).toThrow(
      'the MESH secret of mailbox X26ABC1 is not filled in correctly: password: Invalid input: expected string, received undefined; sharedKey: Invalid input: expected string, received undefined (see docs/DEPLOY.md)',
    );
    const halfTls = JSON.stringify({
      password: PASSWORD,
      sharedKey: SHARED_KEY,
      clientCert: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----',
    });
    const error = (() => {
      try {
        parseMeshSecret(halfTls, MAILBOX);
      } catch (e) {
        return e as Error;
      }
      throw new Error('expected a refusal');
    })();
    expect(error.message).toBe(
      'the MESH secret of mailbox X26ABC1 has only one of clientCert and clientKey: give both',
    );
    const badPem = JSON.stringify({
      password: PASSWORD,
      sharedKey: SHARED_KEY,
      clientKey: 'secret-key-bytes',
    });
    const printed = (() => {
      try {
        parseMeshSecret(badPem, MAILBOX);
        return '';
      } catch (e) {
        return `${(e as Error).message}${(e as Error).stack}${inspect(e)}`;
      }
    })();
    expect(printed).toContain('clientKey: must be PEM text');
    expect(printed).not.toMatch(/secret-key-bytes|do-not-print/);
    expect(() => parseMeshSecret('not json {', MAILBOX)).toThrow(
      'the MESH secret of mailbox X26ABC1 is not JSON (see docs/DEPLOY.md)',
    );
  });
});

describe('meshPollSetupFromEnv', () => {
  const leases = { acquire: async () => ({ acquired: false as const }), release: async () => false };
  it('reads the URL, the mailbox → secret map, the CA bundle and the poll limits', () => {
    const s = meshPollSetupFromEnv(leases, {
      [MESH_POLL_ENV.url]: 'https://mesh.test.example',
      [MESH_POLL_ENV.mailboxes]: JSON.stringify({ x26abc1: SECRET_ARN, X26ABC2: 'itk3/mesh/X26ABC2' }),
      [MESH_POLL_ENV.caBundle]: CA,
      [MESH_POLL_ENV.pollOptions]: '{"maxMessages":20}',
      AWS_REGION: 'eu-west-2',
    });
    expect(s.mailboxes).toEqual(['X26ABC1', 'X26ABC2']);
    expect(s.caBundle).toBe(CA.trim());
    expect(s.pollOptions).toEqual({ maxMessages: 20 });
  });
  it('names the variable that is missing or malformed', () => {
    expect(() => meshPollSetupFromEnv(leases, {})).toThrow('ITK3_MESH_URL: required (the MESH base URL)');
    expect(() =>
      meshPollSetupFromEnv(leases, { [MESH_POLL_ENV.url]: 'https://m', [MESH_POLL_ENV.mailboxes]: '[' }),
    ).toThrow('ITK3_MESH_MAILBOXES: not valid JSON');
    expect(() =>
      meshPollSetupFromEnv(leases, {
        [MESH_POLL_ENV.url]: 'https://m',
        [MESH_POLL_ENV.mailboxes]: '{"A":1}',
      }),
    ).toThrow('ITK3_MESH_MAILBOXES.A: must be a secret ARN or name');
  });
});
