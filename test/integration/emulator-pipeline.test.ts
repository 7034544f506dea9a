/**
 * Emulator mode end to end: the demo scenario (NHS samples + hostile set) through the real
 * handlers, driven by the SQS event source, against each emulator's real queues, KMS keys, tables
 * and bucket — created from the CDK's resource definitions. Recipient keys live in the emulator's
 * KMS; senders seal to the public keys read back with GetPublicKey.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { beforeAll, expect, it } from 'vitest';
import { folderKey } from '../../lib/adapters/aws/deployment-names.js';
import { EmulatorPipeline } from '../../lib/runtime/emulator.js';
import { buildScenario, type ScenarioMessage } from '../../lib/testkit/scenario.js';
import { createWorld, type DemoWorld, publishRecipientKeys } from '../../lib/testkit/world.js';
import { describeEachEmulator } from './support/emulators.js';

describeEachEmulator('emulator-mode pipeline', ({ emulator, endpoint, unique }) => {
  let world: DemoWorld;
  let pipeline: EmulatorPipeline;
  let scenario: ScenarioMessage[];
  const traces: string[] = [];

  beforeAll(async () => {
    world = await createWorld({ recipientModulus: 2048 });
    pipeline = await EmulatorPipeline.start({
      config: world.config,
      endpoint,
      prefix: unique('e2e').replace('itk3-it-', '').slice(0, 20),
      // LocalStack 4.14.0 has no DynamoDB offline: its once-store and audit stay in process.
      localState: emulator.gaps.dynamodb !== undefined,
      visibilityTimeoutSeconds: 2,
    });
    const published = await pipeline.publicJwks();
    publishRecipientKeys(world, published);
    scenario = await buildScenario(world, Date.now());
    for (const phase of [1, 2]) {
      for (const [i, m] of scenario.entries()) {
        if ((m.phase ?? 1) !== phase) continue;
        if (m.direct)
          traces[i] = await pipeline.submitRaw(m.sealed, m.credential ? `Bearer ${m.credential}` : undefined);
        else {
          const r = await pipeline.submit(m.credential ?? '', m.sealed);
          if (r.status !== 202) throw new Error(`front door refused ${m.name}: ${r.error}`);
          traces[i] = r.trackingId;
        }
      }
      const invocations = await pipeline.drain({ timeoutMs: 180_000 });
      console.info(`[${emulator.name}] phase ${phase}: ${invocations} handler invocations`);
    }
  }, 300_000);

  it('ends every sample and hostile message as a correct pipeline must', async () => {
    const mismatches: string[] = [];
    for (const [i, m] of scenario.entries()) {
      const o = await pipeline.outcome(traces[i]!);
      const e = m.expected;
      const ok =
        o.status === e.status &&
        (e.itk3Code === undefined || o.itk3Code === e.itk3Code) &&
        (e.stage === undefined || o.stage === e.stage) &&
        (e.code === undefined || o.code === e.code);
      if (!ok)
        mismatches.push(
          `${m.name}: got ${o.status}/${o.stage}/${o.itk3Code}/${o.code}, expected ${JSON.stringify(e)}`,
        );
    }
    expect(mismatches).toEqual([]);
  });

  it('delivers the exact bytes to the recipient target in the bucket', async () => {
    const delivered = scenario.filter((m) => m.expected.status === 'delivered');
    expect(delivered.length).toBeGreaterThan(0);
    for (const [i, m] of scenario.entries()) {
      if (m.expected.status !== 'delivered') continue;
      const o = await pipeline.outcome(traces[i]!);
      const { itk } = JSON.parse(Buffer.from(m.sealed.split('.')[0]!, 'base64url').toString());
      const recipient = world.config.recipientsByOds.get(itk.to)!;
      const target = recipient.target as { type: 'folder'; path: string };
      const obj = await pipeline.clients.s3.send(
        new GetObjectCommand({
          Bucket: pipeline.resources.blobBucket,
          // `<sender>_<MessageHeader id>_<tracking id>.xml` (issue 9, class 3).
          Key: folderKey(target.path, `${itk.from}_${o.messageId}_${traces[i]}.xml`),
        }),
      );
      const bytes = await obj.Body!.transformToByteArray();
      expect(bytes.byteLength).toBeGreaterThan(1000);
    }
  });
});
