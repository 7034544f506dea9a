/**
 * The AWS MESH poller's Lambda handler (functions/mesh-poll.ts), run in-process with the AWS
 * adapters pointed at ministack (SQS inbound queue, DynamoDB once-store and lease, S3 claim checks,
 * Secrets Manager credentials) and NHS England's MESH sandbox, with NHS England's Python mesh-client
 * as the GP system: the very code a scheduled invocation runs, minus only the Scheduler itself.
 *
 * Every message it enqueues carries the attestation signed with the response-signing key in KMS.
 *
 * End to end (issue 12): the same poll job (attesting with KMS) feeds a pipeline provisioned on
 * ministack whose five stage handlers run in-process on the AWS adapters (lib/runtime/emulator.ts),
 * the deliver stage sending through MESH with the mailbox secret from Secrets Manager (the deliver
 * function's composition, lib/adapters/aws/mesh-delivery.ts): the recipient's mesh-client receives
 * the report byte-identical and the sender's mesh-client a signed ITK008M 20013, verified with the
 * KMS public key. Not covered here: CloudFormation, IAM and the Lambda runtime of a deployed stack.
 *
 * Runs when both `ITK3_MINISTACK_ENDPOINT` and `ITK3_MESH_SANDBOX` are set; otherwise skipped with the
 * reason printed.
 */
import { createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { CreateKeyCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { CreateQueueCommand, DeleteQueueCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { compactVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoLease } from '../../lib/adapters/aws/dynamo-lease.js';
import { KmsKeyService } from '../../lib/adapters/aws/kms-key-service.js';
import {
  type MeshPollJobResult,
  meshPollSetupFromEnv,
  runMeshPollJob,
} from '../../lib/adapters/aws/mesh-poll-job.js';
import { type LoadedConfig, loadConfig } from '../../lib/config/load.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import { parseBundle } from '../../lib/itk3/index.js';
import { loadSamples } from '../../lib/itk3/samples.js';
import { meshAttester } from '../../lib/mesh/connect.js';
import {
  HttpMeshClient,
  MESH_ATTESTATION_ATTRIBUTE,
  meshFactsFrom,
  verifyMeshAttestation,
} from '../../lib/mesh/index.js';
import { EmulatorPipeline } from '../../lib/runtime/emulator.js';
import { testWorld } from '../support/world.js';
import { createBucket, deleteBucket } from './support/buckets.js';
import { testConfig } from './support/config.js';
import { emulatorClients } from './support/emulators.js';
import {
  acquireSandboxLock,
  MAILBOX_PASSWORD,
  MESH_SANDBOX,
  MESH_SHARED_KEY,
  partnerReceive,
  partnerSend,
  releaseSandboxLock,
  resetMailbox,
} from './support/mesh.js';
import { createTable, deleteTable } from './support/tables.js';

const MINISTACK = process.env.ITK3_MINISTACK_ENDPOINT || undefined;
const SUITE = 'MESH poller Lambda handler on ministack and the MESH sandbox';

if (!MINISTACK || !MESH_SANDBOX) {
  const missing = [!MINISTACK && 'ITK3_MINISTACK_ENDPOINT', !MESH_SANDBOX && 'ITK3_MESH_SANDBOX'].filter(
    Boolean,
  );
  console.warn(
    `SKIPPED suite "${SUITE}": ${missing.join(' and ')} not set (scripts/emulator.sh start ministack; scripts/mesh-sandbox.sh start)`,
  );
  describe.skip(SUITE, () => {
    it('needs ITK3_MINISTACK_ENDPOINT and ITK3_MESH_SANDBOX', () => {});
  });
} else {
  describe(SUITE, () => {
    const endpoint = MINISTACK;
    const clients = emulatorClients(endpoint);
    const secrets = new SecretsManagerClient({
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    const run = randomBytes(3).toString('hex');
    const names = {
      once: `itk3-it-mesh-once-${run}`,
      audit: `itk3-it-mesh-audit-${run}`,
      bucket: `itk3-it-mesh-blobs-${run}`,
      queue: `itk3-it-mesh-inbound-${run}`,
      secret: `itk3-it/mesh/X26ABC3-${run}`,
    };
    // A mailbox of its own, sending to itself: test/integration/mesh-sandbox.test.ts, which may run
    // at the same time, empties and resets X26ABC1 and X26ABC2 before each of its tests.
    const gateway = 'X26ABC3';
    const gp = gateway;
    let queueUrl: string;
    let signingKeyId: string;
    /** The integration configuration with the gateway mailbox in its `mesh` section (AWS: no secret refs). */
    const config: LoadedConfig = loadConfig({
      ...structuredClone(testConfig().doc),
      mesh: { url: MESH_SANDBOX, mailboxes: [{ mailbox: gateway, recipients: ['RCP01'] }] },
      // The sandbox has three mailboxes: here the "GP" sends from the gateway mailbox itself, which a
      // grant registers as a sending mailbox (the poller spends nothing on unregistered senders).
      delegations: [
        ...structuredClone(testConfig().doc.delegations ?? []),
        {
          id: 'it-sandbox-sender',
          actor: 'mesh-it',
          issuers: [],
          meshMailboxes: [gateway],
          onBehalfOf: [testConfig().doc.senders[0]!.ods],
          events: ['ITK007C'],
          expires: '2099-01-01',
        },
      ],
    });
    let handler: (event: unknown, context: Context) => Promise<MeshPollJobResult>;
    const saved = { ...process.env };

    const invoke = () =>
      handler({ mailbox: gateway.toLowerCase() }, {
        awsRequestId: randomUUID(),
        functionName: 'itk3-mesh-poll',
        getRemainingTimeInMillis: () => 300_000,
      } as Context);

    const receiveAll = async () => {
      const out: { body: string; attributes: Record<string, string> }[] = [];
      for (let i = 0; i < 5; i += 1) {
        const r = await clients.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: queueUrl,
            MaxNumberOfMessages: 10,
            MessageAttributeNames: ['All'],
            WaitTimeSeconds: 0,
            VisibilityTimeout: 300,
          }),
        );
        for (const m of r.Messages ?? []) {
          out.push({
            body: m.Body ?? '',
            attributes: Object.fromEntries(
              Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue ?? '']),
            ),
          });
        }
        if ((r.Messages ?? []).length === 0) break;
      }
      return out;
    };

    beforeAll(async () => {
      // The sandbox's mailboxes are shared with the other MESH suites, which reset them: one at a time.
      await acquireSandboxLock();
      await createTable(clients, names.once, 'once');
      await createTable(clients, names.audit, 'audit');
      await createBucket(clients, names.bucket);
      queueUrl = (await clients.sqs.send(new CreateQueueCommand({ QueueName: names.queue }))).QueueUrl!;
      // The response-signing key in KMS: the poller attests every message with it (kms:Sign).
      signingKeyId = (
        await clients.kms.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }))
      ).KeyMetadata!.KeyId!;
      // Loopback sandbox over HTTP: no client certificate, so the secret holds password and shared key.
      await secrets.send(
        new CreateSecretCommand({
          Name: names.secret,
          SecretString: JSON.stringify({ password: MAILBOX_PASSWORD, sharedKey: MESH_SHARED_KEY }),
        }),
      );
      Object.assign(process.env, {
        AWS_ENDPOINT_URL: endpoint,
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
        ITK3_CONFIG_JSON: JSON.stringify(config.doc),
        ITK3_ONCE_TABLE: names.once,
        ITK3_AUDIT_TABLE: names.audit,
        ITK3_BLOB_BUCKET: names.bucket,
        ITK3_QUEUE_URL_AUTHENTICATE: queueUrl,
        ITK3_KMS_KEYS: JSON.stringify({ [config.doc.responseSigning.kid]: signingKeyId }),
        ITK3_MESH_URL: MESH_SANDBOX,
        ITK3_MESH_MAILBOXES: JSON.stringify({ [gateway]: names.secret }),
      });
      ({ handler } = (await import('../../functions/mesh-poll.js')) as unknown as {
        handler: typeof handler;
      });
      // Whatever earlier runs left in the gateway's inbox.
      const client = new HttpMeshClient({
        url: MESH_SANDBOX,
        mailbox: gateway,
        password: MAILBOX_PASSWORD,
        sharedKey: MESH_SHARED_KEY,
      });
      for (const id of (await client.listInbox()).messageIds) await client.acknowledge(id);
      client.close();
      await resetMailbox(gateway);
    });

    afterAll(async () => {
      releaseSandboxLock();
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
      await secrets
        .send(new DeleteSecretCommand({ SecretId: names.secret, ForceDeleteWithoutRecovery: true }))
        .catch(() => {});
      await clients.sqs.send(new DeleteQueueCommand({ QueueUrl: queueUrl })).catch(() => {});
      await clients.kms
        .send(new ScheduleKeyDeletionCommand({ KeyId: signingKeyId, PendingWindowInDays: 7 }))
        .catch(() => {});
      await deleteTable(clients, names.once);
      await deleteTable(clients, names.audit);
      await deleteBucket(clients, names.bucket);
    });

    it('moves the GP’s messages onto the SQS inbound queue byte-identical, large ones through S3, and gives the lease back', async () => {
      const samples = loadSamples()
        .filter((s) => s.kind === 'itk3')
        .slice(0, 2);
      const sent = new Map<string, Uint8Array>();
      for (const sample of samples) {
        sent.set(
          partnerSend({
            mailbox: gp,
            to: gateway,
            body: sample.bytes,
            workflowId: 'GPFED_CONSULT_REPORT',
          }),
          sample.bytes,
        );
      }
      // Above the configuration's claim-check size: the queue gets a reference, S3 the bytes.
      const large = new TextEncoder().encode(
        `<Bundle>${'x'.repeat(config.doc.limits.claimCheckBytes + 1)}</Bundle>`,
      );
      const largeId = partnerSend({
        mailbox: gp,
        to: gateway,
        body: large,
        workflowId: 'GPFED_CONSULT_REPORT',
      });

      const result = await invoke();
      expect(result).toMatchObject({
        mailbox: gateway,
        outcome: 'polled',
        outOfTime: false,
        leaseReleased: true,
      });
      if (result.outcome !== 'polled') throw new Error('expected a pass');
      expect(new Set(result.summary.enqueued.map((e) => e.meshMessageId))).toEqual(
        new Set([...sent.keys(), largeId]),
      );

      const queued = await receiveAll();
      expect(queued).toHaveLength(3);
      for (const [meshId, bytes] of sent) {
        const m = queued.find((q) => q.attributes['Mex-MessageID'] === meshId);
        expect(m?.attributes).toMatchObject({ Transport: 'mesh', 'Mex-From': gp, 'Mex-To': gateway });
        expect(m?.body).toBe(new TextDecoder().decode(bytes));
      }
      // Each is attested by the gateway key in KMS, over exactly its MESH facts and queue body.
      const keys = new KmsKeyService(clients.kms, { [config.doc.responseSigning.kid]: signingKeyId });
      for (const q of queued) {
        const facts = meshFactsFrom(q.attributes, q.body);
        expect(facts).toBeDefined();
        const attestation = q.attributes[MESH_ATTESTATION_ATTRIBUTE]!;
        expect(await verifyMeshAttestation(keys, config.doc.responseSigning.kid, attestation, facts!)).toBe(
          true,
        );
        const forged = { ...facts!, from: 'X26EVIL1' };
        expect(await verifyMeshAttestation(keys, config.doc.responseSigning.kid, attestation, forged)).toBe(
          false,
        );
      }
      const ref = JSON.parse(queued.find((q) => q.attributes['Mex-MessageID'] === largeId)!.body) as {
        claimCheck: { key: string; bytes: number };
      };
      expect(ref.claimCheck.key).toMatch(/^claim-check\/mesh-/);
      // The S3 blob store keeps keys under its claim-check prefix (what the CDK grant names).
      const object = await clients.s3.send(
        new GetObjectCommand({ Bucket: names.bucket, Key: `claim-check/${ref.claimCheck.key}` }),
      );
      expect(Buffer.from(await object.Body!.transformToByteArray()).equals(Buffer.from(large))).toBe(true);

      const lease = await clients.dynamodb.send(
        new GetItemCommand({
          TableName: names.once,
          Key: { k: { S: `lease#mesh#${gateway}` } },
          ConsistentRead: true,
        }),
      );
      expect(lease.Item).toBeUndefined();
      const second = await invoke();
      expect(second).toMatchObject({ outcome: 'polled', summary: { enqueued: [] } });
    });

    it('end to end through the five stages on ministack: a consultation report sent with mesh-client is delivered byte-identical and answered with ITK008M 20013 through MESH', async () => {
      // The gateway is X26ABC3 as above; X26ABC1 plays both the GP system and the recipient's system
      // (the sandbox has three mailboxes; the fewer this suite shares with the other MESH suites,
      // which run at the same time, the better).
      const sender = 'X26ABC1';
      const world = await testWorld();
      const doc = structuredClone(world.configDoc) as PipelineConfigInput;
      doc.mesh = {
        url: MESH_SANDBOX!,
        mailboxes: [{ mailbox: gateway, recipients: ['A83627', 'A8797979'] }],
      };
      // Signed responses: the ITK008M is the JWS by the response-signing key in KMS, checked below.
      doc.senders[0]!.mesh = { mailboxes: [sender], signedResponses: true };
      doc.recipients[0]!.target = { type: 'mesh', mailbox: sender };
      doc.rules.push({
        ...structuredClone(doc.rules[0]!),
        id: 'gp0001-over-mesh',
        sender: { ods: 'GP0001' },
        transports: ['mesh'],
      });
      const meshConfig = loadConfig(doc);
      // The deliver function's MESH environment, as the stack sets it (same secret as the poller).
      const meshEnv = {
        AWS_ENDPOINT_URL: endpoint,
        AWS_REGION: 'us-east-1',
        ITK3_MESH_URL: MESH_SANDBOX,
        ITK3_MESH_MAILBOXES: JSON.stringify({ [gateway]: names.secret }),
      };
      const pipeline = await EmulatorPipeline.start({
        config: meshConfig,
        endpoint,
        prefix: `it-meshe2e-${run}-`,
        env: meshEnv,
      });
      await resetMailbox(gateway);
      await resetMailbox(sender);

      const original = loadSamples().find((x) => x.name === 'consultation_report.xml')!;
      const body = Buffer.from(
        Buffer.from(original.bytes)
          .toString('utf8')
          .replace('<endpoint value="MESHGP0001"', `<endpoint value="${sender}"`),
      );
      partnerSend({
        mailbox: sender,
        to: gateway,
        body,
        workflowId: 'GPFED_CONSULT_REPORT',
        localId: 'ehr-4711',
      });

      // The poll job as the poller function composes it: the pipeline's AWS ports, attesting with KMS.
      const setup = meshPollSetupFromEnv(
        new DynamoLease(pipeline.clients.dynamodb, pipeline.resources.onceTable),
        {
          ...meshEnv,
          AWS_ACCESS_KEY_ID: 'test',
          AWS_SECRET_ACCESS_KEY: 'test',
        },
      );
      const pass = await runMeshPollJob(
        gateway,
        setup,
        { ...pipeline.ports, attest: meshAttester(meshConfig, pipeline.ports.keys) },
        { owner: randomUUID(), remainingMs: 300_000 },
      );
      expect(pass).toMatchObject({ outcome: 'polled', leaseReleased: true });
      if (pass.outcome !== 'polled') throw new Error('expected a pass');
      expect(pass.summary.enqueued).toHaveLength(1);

      // The real stage handlers, AWS adapters on ministack, fed from the emulator's SQS queues.
      await pipeline.drain({ timeoutMs: 120_000 });
      const traceId = pass.summary.enqueued[0]!.traceId;
      // What the pipeline decided, from its DynamoDB audit trail (shown if the next check fails).
      expect(await pipeline.outcome(traceId)).toMatchObject({ status: 'delivered' });

      const received = partnerReceive(sender);
      const delivered = received.filter((m) => m.workflow_id === 'GPFED_CONSULT_REPORT');
      const answers = received.filter((m) => m.workflow_id === 'GPFED_CONSULT_REPORT_ACK');
      expect(delivered).toHaveLength(1);
      expect(delivered[0]!.body.equals(body)).toBe(true);
      expect(answers).toHaveLength(1);
      expect(answers[0]!.local_id).toBe(delivered[0]!.local_id);
      const spki = await pipeline.ports.keys.publicKeySpki(meshConfig.doc.responseSigning.kid);
      const { payload, protectedHeader } = await compactVerify(
        answers[0]!.body.toString('utf8').trim(),
        createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }),
        { algorithms: ['ES256'] },
      );
      expect(protectedHeader.kid).toBe(meshConfig.doc.responseSigning.kid);
      const ack = parseBundle(payload, protectedHeader.cty === 'fhir+json' ? 'json' : 'xml');
      expect(ack.header.event.code).toBe('ITK008M');
      expect(ack.header.response).toMatchObject({
        identifier: parseBundle(body, 'xml').header.id,
        code: 'ok',
        itkCode: '20013',
      });
    });

    it('skips the mailbox while another pass holds its lease, and takes over once a crashed holder’s lease lapses', async () => {
      const leases = new DynamoLease(clients.dynamodb, names.once);
      const crashed = await leases.acquire(`lease#mesh#${gateway}`, 'crashed-invocation', 2);
      expect(crashed.acquired).toBe(true);
      const meshId = partnerSend({
        mailbox: gp,
        to: gateway,
        body: new TextEncoder().encode('<Bundle xmlns="http://hl7.org/fhir"/>'),
        workflowId: 'GPFED_CONSULT_REPORT',
      });

      expect(await invoke()).toMatchObject({ outcome: 'locked', holder: 'crashed-invocation' });
      expect(await receiveAll()).toHaveLength(0);

      await new Promise((resolve) => setTimeout(resolve, 3_100));
      const result = await invoke();
      expect(result).toMatchObject({ outcome: 'polled', leaseReleased: true });
      if (result.outcome !== 'polled') throw new Error('expected a pass');
      expect(result.summary.enqueued.map((e) => e.meshMessageId)).toEqual([meshId]);
      // The crashed holder, back from the dead, cannot release what is no longer its lease.
      if (crashed.acquired) expect(await leases.release(crashed.lease)).toBe(false);
      expect(await receiveAll()).toHaveLength(1);
    });
  });
}
