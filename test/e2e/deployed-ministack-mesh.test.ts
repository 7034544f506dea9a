import { createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GetPublicKeyCommand } from '@aws-sdk/client-kms';
import { PutSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { compactVerify, importSPKI } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../lib/adapters/aws/clients.js';
import { DynamoAuditLog } from '../../lib/adapters/aws/dynamo-audit-log.js';
import { consultationReportFrom, MESH_DEMO_MAILBOXES, meshWorldConfig } from '../../lib/cli/demo-mesh.js';
import { parseBundle } from '../../lib/itk3/index.js';
import { outcomeFromAudit } from '../../lib/runtime/embedded.js';
import { createWorld, type DemoWorld } from '../../lib/testkit/world.js';
import { emulatorClients } from '../integration/support/emulators.js';
import {
  acquireSandboxLock,
  MAILBOX_PASSWORD,
  MESH_SANDBOX,
  MESH_SHARED_KEY,
  partnerReceive,
  partnerSend,
  releaseSandboxLock,
  resetMailbox,
} from '../integration/support/mesh.js';
import { cdkOnEmulator } from './support/cdk-on-emulator.js';

const endpoint = process.env.ITK3_MINISTACK_ENDPOINT;
const enabled = Boolean(endpoint) && process.env.ITK3_DEPLOYED_E2E === '1';
const root = resolve(import.meta.dirname, '../..');
const { gp, gateway, recipient } = MESH_DEMO_MAILBOXES;

interface Outputs {
  AuditTableName: string;
  ResponseSigningKeyArn: string;
  MeshPollerFunctionName: string;
  MeshMailboxSecretArns: string;
}

const sandboxUrl = MESH_SANDBOX;
if (!enabled || !sandboxUrl) {
  console.warn(
    'SKIPPED suite "MESH on the deployed stack on ministack": set ITK3_MINISTACK_ENDPOINT, ITK3_DEPLOYED_E2E=1 and ITK3_MESH_SANDBOX to cdk deploy the stack with its MESH poller to ministack',
  );
  describe.skip('MESH on the deployed stack on ministack', () => {
    it('needs ITK3_MINISTACK_ENDPOINT, ITK3_DEPLOYED_E2E=1 and ITK3_MESH_SANDBOX', () => {});
  });
} else {
  describe('MESH on the deployed stack on ministack', () => {
    const url = sandboxUrl;
    let locked = false;
    const stackName = `Itk3Mesh${randomBytes(3).toString('hex')}`;
    const dir = mkdtempSync(join(tmpdir(), 'itk3-deployed-mesh-'));
    const configFile = join(dir, 'config.json');
    const emulatorCdk = cdkOnEmulator(endpoint, root);
    let world: DemoWorld;
    let outputs: Outputs;
    let clients: AwsClients;
    let deployed = false;
    const report = consultationReportFrom(gp);
    let delivered: ReturnType<typeof partnerReceive> = [];
    let answers: ReturnType<typeof partnerReceive> = [];
    let sentAt = 0;
    let arrivedAfterMs = 0;

    beforeAll(async () => {
      world = await createWorld({ recipientModulus: 2048 });
      // On the stack the mailbox secret holds the password and shared key: no references here.
      const doc = meshWorldConfig(world, { url, sharedKeyFile: '-', passwordFile: '-' });
      delete doc.mesh!.sharedKey;
      for (const m of doc.mesh!.mailboxes) delete m.password;
      writeFileSync(configFile, JSON.stringify(doc));

      const started = Date.now();
      await emulatorCdk.bootstrap();
      outputs = emulatorCdk.deploy<Outputs>(configFile, stackName, join(dir, 'outputs.json'), [
        `itk3:meshUrl=${url}`,
        `itk3:meshMailboxes=${gateway}`,
        'itk3:meshScheduleMinutes=1',
        'itk3:meshEmulatorLoopbackHttp=true',
      ]);
      deployed = true;
      console.info(`bootstrap + deploy of ${stackName}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
      clients = emulatorClients(endpoint!);
      // The sandbox is shared with the other MESH suites: taken once the stack is up (its poller
      // cannot log in before the secret is filled in below), given back after the stack is gone.
      await acquireSandboxLock();
      locked = true;
      for (const m of [gp, gateway, recipient]) await resetMailbox(m);
      // The operator's step after deploying: fill in the mailbox secret (docs/DEPLOY.md).
      const secretArn = (JSON.parse(outputs.MeshMailboxSecretArns) as Record<string, string>)[gateway]!;
      const secrets = new SecretsManagerClient({
        endpoint: endpoint!,
        region: 'us-east-1',
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      });
      await secrets.send(
        new PutSecretValueCommand({
          SecretId: secretArn,
          SecretString: JSON.stringify({ password: MAILBOX_PASSWORD, sharedKey: MESH_SHARED_KEY }),
        }),
      );
      secrets.destroy();

      partnerSend({ mailbox: gp, to: gateway, body: report.bytes, workflowId: 'GPFED_CONSULT_REPORT' });
      sentAt = Date.now();
      // Nobody invokes the poller: ministack's EventBridge Scheduler fires it (rate(1 minute)).
      const deadline = Date.now() + 240_000;
      while (Date.now() < deadline && (delivered.length === 0 || answers.length === 0)) {
        await new Promise((r) => setTimeout(r, 3_000));
        if (delivered.length === 0) {
          delivered = partnerReceive(recipient);
          if (delivered.length > 0) arrivedAfterMs = Date.now() - sentAt;
        }
        if (answers.length === 0) answers = partnerReceive(gp);
      }
      console.info(
        `MESH on the deployed stack: delivered ${arrivedAfterMs ? `${(arrivedAfterMs / 1000).toFixed(0)} s` : 'never'} after the send`,
      );
    }, 900_000);

    afterAll(() => {
      try {
        if (deployed) emulatorCdk.destroy(configFile, stackName);
      } catch (error) {
        console.warn(`cdk destroy of ${stackName} failed: ${(error as Error).message.split('\n')[0]}`);
      } finally {
        // Only now: until the stack is gone its scheduled poller would take other suites' messages.
        if (locked) releaseSandboxLock();
      }
    }, 300_000);

    it('delivers the consultation report sent with mesh-client to the recipient mailbox byte-identical', async () => {
      expect(delivered).toHaveLength(1);
      expect(delivered[0]!.body.equals(report.bytes)).toBe(true);
      expect(delivered[0]).toMatchObject({ sender: gateway, workflow_id: 'GPFED_CONSULT_REPORT' });
      // The trace began with the scheduled poller's audit entry, and ended delivered with 20013.
      const trackingId = delivered[0]!.local_id!;
      const entries = await new DynamoAuditLog(clients.dynamodb, outputs.AuditTableName).byTrace(trackingId);
      expect(entries.some((e) => e.stage === 'mesh' && e.event === 'received')).toBe(true);
      expect(outcomeFromAudit(trackingId, entries)).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    });

    it('answers the GP system with an ITK008M 20013 it verifies with the stack’s KMS key', async () => {
      expect(answers).toHaveLength(1);
      expect(answers[0]).toMatchObject({
        sender: gateway,
        workflow_id: 'GPFED_CONSULT_REPORT_ACK',
        local_id: delivered[0]?.local_id,
      });
      const { PublicKey } = await clients.kms.send(
        new GetPublicKeyCommand({ KeyId: outputs.ResponseSigningKeyArn }),
      );
      const pem = createPublicKey({ key: Buffer.from(PublicKey!), format: 'der', type: 'spki' })
        .export({ format: 'pem', type: 'spki' })
        .toString();
      const { payload } = await compactVerify(
        answers[0]!.body.toString('utf8').trim(),
        await importSPKI(pem, 'ES256'),
        {
          algorithms: ['ES256'],
        },
      );
      const ack = parseBundle(payload, 'xml').header;
      expect(ack.event.code).toBe('ITK008M');
      expect(ack.response).toMatchObject({
        identifier: parseBundle(report.bytes, 'xml').header.id,
        itkCode: '20013',
      });
    });
  });
}
