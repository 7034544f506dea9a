import { createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GetPublicKeyCommand } from '@aws-sdk/client-kms';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { compactVerify, importSPKI, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../lib/adapters/aws/clients.js';
import { folderKey } from '../../lib/adapters/aws/deployment-names.js';
import { DynamoAuditLog } from '../../lib/adapters/aws/dynamo-audit-log.js';
import { sendDirect } from '../../lib/adapters/aws/sqs-event-source.js';
import { parseBundle } from '../../lib/itk3/index.js';
import { type MessageOutcome, outcomeFromAudit } from '../../lib/runtime/embedded.js';
import { rejectionAnswered } from '../../lib/stages/batch.js';
import { buildScenario, type ScenarioMessage } from '../../lib/testkit/scenario.js';
import { createWorld, type DemoWorld, publishRecipientKeys } from '../../lib/testkit/world.js';
import { emulatorClients } from '../integration/support/emulators.js';
import { cdkOnEmulator } from './support/cdk-on-emulator.js';

const endpoint = process.env.ITK3_MINISTACK_ENDPOINT;
const enabled = Boolean(endpoint) && process.env.ITK3_DEPLOYED_E2E === '1';
if (!enabled) {
  console.warn(
    'SKIPPED suite "deployed stack on ministack": set ITK3_MINISTACK_ENDPOINT (scripts/emulator.sh start ministack) and ITK3_DEPLOYED_E2E=1 to cdk deploy the stack to ministack and run it',
  );
}

const root = resolve(import.meta.dirname, '../..');

interface Outputs {
  InboundQueueUrl: string;
  HttpApiUrl: string;
  BlobBucketName: string;
  AuditTableName: string;
  RecipientKeyArns: string;
  ResponseSigningKeyArn: string;
}

describe.skipIf(!enabled)('deployed stack on ministack', () => {
  const stackName = `Itk3E2e${randomBytes(3).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'itk3-deployed-'));
  const emulatorCdk = cdkOnEmulator(endpoint, root);
  let world: DemoWorld;
  let outputs: Outputs;
  let clients: AwsClients;
  let scenario: ScenarioMessage[];
  const traces: string[] = [];
  const outcomes: MessageOutcome[] = [];
  let deployed = false;

  beforeAll(async () => {
    world = await createWorld({ recipientModulus: 2048 });
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify(world.configDoc));

    const started = Date.now();
    await emulatorCdk.bootstrap();
    outputs = emulatorCdk.deploy<Outputs>(configFile, stackName, join(dir, 'outputs.json'));
    deployed = true;
    console.info(`bootstrap + deploy of ${stackName}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    clients = emulatorClients(endpoint!);

    // Senders encrypt to the public halves of the stack's KMS recipient keys.
    const keyArns = JSON.parse(outputs.RecipientKeyArns) as Record<string, string>;
    const published: Record<string, JWK> = {};
    for (const [kid, arn] of Object.entries(keyArns)) {
      const { PublicKey } = await clients.kms.send(new GetPublicKeyCommand({ KeyId: arn }));
      published[kid] = createPublicKey({ key: Buffer.from(PublicKey!), format: 'der', type: 'spki' }).export({
        format: 'jwk',
      });
    }
    publishRecipientKeys(world, published);

    scenario = await buildScenario(world, Date.now());
    const queueUrl = loopback(outputs.InboundQueueUrl);
    const apiUrl = apiOnEmulator(outputs.HttpApiUrl);
    for (const phase of [1, 2]) {
      for (const [i, m] of scenario.entries()) {
        if ((m.phase ?? 1) !== phase) continue;
        const authorization = m.credential ? `Bearer ${m.credential}` : undefined;
        if (i % 2 === 0 && authorization && !m.direct) {
          // Half through the HTTP API (ingest Lambda), half straight onto the inbound queue; the
          // messages the front door would refuse with a 401 (m.direct) always go to the queue.
          const res = await fetch(apiUrl, { method: 'POST', headers: { authorization }, body: m.sealed });
          expect(res.status).toBe(202);
          traces[i] = ((await res.json()) as { trackingId: string }).trackingId;
        } else {
          traces[i] = await sendDirect(clients.sqs, queueUrl, m.sealed, authorization);
        }
      }
      await waitForOutcomes(phase);
    }
  }, 900_000);

  afterAll(() => {
    if (deployed) {
      try {
        emulatorCdk.destroy(join(dir, 'config.json'), stackName);
      } catch (error) {
        console.warn(`cdk destroy of ${stackName} failed: ${(error as Error).message.split('\n')[0]}`);
      }
    }
  }, 300_000);

  async function waitForOutcomes(phase: number): Promise<void> {
    const audit = new DynamoAuditLog(clients.dynamodb, outputs.AuditTableName);
    const deadline = Date.now() + 240_000;
    const pending = () =>
      scenario.map((m, i) => ((m.phase ?? 1) === phase && !outcomes[i] ? i : -1)).filter((i) => i >= 0);
    while (pending().length > 0 && Date.now() < deadline) {
      for (const i of pending()) {
        const entries = await audit.byTrace(traces[i]!);
        const o = outcomeFromAudit(traces[i]!, entries);
        // An unauthenticated rejection (issue 9 class 4) or an ungranted delegate's is never
        // answered: its rejection entry ends it.
        const finished =
          o.status === 'delivered' ||
          (o.status === 'rejected' &&
            (!rejectionAnswered(o.stage ?? '', o.code ?? '') ||
              entries.some((e) => e.event === 'response-sent')));
        if (finished) outcomes[i] = o;
      }
      if (pending().length > 0) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  it('ends every sample and hostile message as a correct pipeline must, with the Lambdas running in the emulator', () => {
    const mismatches = scenario.flatMap((m, i) => {
      const o = outcomes[i];
      const e = m.expected;
      if (!o) return [`${m.name}: no outcome within the deadline`];
      const ok =
        o.status === e.status &&
        (e.itk3Code === undefined || o.itk3Code === e.itk3Code) &&
        (e.stage === undefined || o.stage === e.stage) &&
        (e.code === undefined || o.code === e.code);
      return ok
        ? []
        : [`${m.name}: got ${o.status}/${o.stage}/${o.itk3Code}/${o.code}, expected ${JSON.stringify(e)}`];
    });
    expect(mismatches).toEqual([]);
  });

  it('rejects at least one message at each deciding stage', () => {
    const stages = new Set(outcomes.filter((o) => o?.status === 'rejected').map((o) => o!.stage));
    expect([...stages].sort()).toEqual(['authenticate', 'authorise', 'decrypt', 'verify']);
  });

  it('delivers byte-identical Bundles to the recipient targets in the bucket', async () => {
    let checked = 0;
    for (const [i, m] of scenario.entries()) {
      if (m.expected.status !== 'delivered' || !m.bundle) continue;
      const ods = routingOf(m).to;
      const target = world.config.recipientsByOds.get(ods)!.target as { path: string };
      const obj = await clients.s3.send(
        new GetObjectCommand({
          Bucket: outputs.BlobBucketName,
          // `<sender>_<MessageHeader id>_<tracking id>.xml` (issue 9, class 3).
          Key: folderKey(
            target.path,
            `${routingOf(m).from}_${outcomes[i]!.messageId}_${outcomes[i]!.traceId}.xml`,
          ),
        }),
      );
      expect(Buffer.from(await obj.Body!.transformToByteArray()).equals(Buffer.from(m.bundle))).toBe(true);
      checked += 1;
    }
    expect(checked).toBeGreaterThan(0);
  });

  it('signs every ITK3 response with the KMS response-signing key', async () => {
    const { PublicKey } = await clients.kms.send(
      new GetPublicKeyCommand({ KeyId: outputs.ResponseSigningKeyArn }),
    );
    const pem = createPublicKey({ key: Buffer.from(PublicKey!), format: 'der', type: 'spki' })
      .export({ format: 'pem', type: 'spki' })
      .toString();
    const key = await importSPKI(pem, 'ES256');
    let checked = 0;
    for (const [i, o] of outcomes.entries()) {
      if (!o) continue;
      const sender = routingOf(scenario[i]!).from;
      const code = o.status === 'delivered' ? '20013' : o.itk3Code!;
      const folder =
        o.status === 'rejected' && (o.stage === 'authenticate' || !sender)
          ? world.config.doc.unauthenticatedResponseTarget
          : world.config.sendersByOds.get(sender!)?.responseTarget;
      if (folder?.type !== 'folder') continue;
      const obj = await clients.s3
        .send(
          new GetObjectCommand({
            Bucket: outputs.BlobBucketName,
            Key: folderKey(folder.path, `${o.traceId}-${code}.jws`),
          }),
        )
        .catch(() => undefined);
      if (!obj) continue;
      const jws = await obj.Body!.transformToString();
      const { payload } = await compactVerify(jws, key, { algorithms: ['ES256'] });
      const response = parseBundle(payload, 'xml');
      expect(response.header.event.code).toBe('ITK008M');
      checked += 1;
    }
    expect(checked).toBeGreaterThanOrEqual(scenario.length / 2);
  });
});

/** The routing header of a sealed message (what a sender addressed, before any verification). */
function routingOf(m: ScenarioMessage): { from: string; to: string } {
  return (
    JSON.parse(Buffer.from(m.sealed.split('.')[0]!, 'base64url').toString('utf8')) as {
      itk: { from: string; to: string };
    }
  ).itk;
}

/** ministack returns queue URLs on `localhost`; the tests use loopback by address only. */
function loopback(url: string): string {
  return url.replace('//localhost:', '//127.0.0.1:');
}

/** An HTTP API URL as ministack serves it: `/_aws/execute-api/<api id>/$default/<path>`. */
function apiOnEmulator(url: string): string {
  const u = new URL(url);
  const apiId = u.hostname.split('.')[0]!;
  return `${endpoint}/_aws/execute-api/${apiId}/$default${u.pathname}`;
}
