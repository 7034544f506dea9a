/**
 * MESH as an identity source and as a delivery transport, through the real embedded pipeline (the
 * deployed handler exports, real keys, the real poller, attestation, stages and MESH deliverer);
 * only the MESH network is in memory (test/support/memory-mesh.ts). The same scenarios against NHS
 * England's sandbox: test/integration/mesh-gateway.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PipelineConfigInput } from '../../../lib/config/schema.js';
import { parseBundle } from '../../../lib/itk3/index.js';
import {
  attachMesh,
  attestMeshFacts,
  type MeshGateway,
  meshAttester,
  meshFactsFrom,
  pollMailbox,
} from '../../../lib/mesh/index.js';
import type { EmbeddedPipeline } from '../../../lib/runtime/embedded.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { MemoryMeshNetwork } from '../../support/memory-mesh.js';
import {
  type BuiltMessage,
  buildMessage,
  configWith,
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  sealAs,
  testWorld,
  verifyResponse,
} from '../../support/world.js';

const GATEWAY = 'GWMBX1';
const GP = 'MESHGP0001';
const X26_MAILBOX = 'NOROT003';
const HUB = 'HUBMBX1';
const A83627_MAILBOX = 'A83627MBX';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

/** The world's configuration with MESH: GP0001 and X26 own mailboxes, a hub runs one for FQ123. */
function meshConfig(change: (doc: PipelineConfigInput) => void = () => {}) {
  const doc = structuredClone(world.configDoc) as PipelineConfigInput;
  doc.mesh = {
    url: 'http://127.0.0.1:1',
    sharedKey: { env: 'UNUSED' },
    mailboxes: [{ mailbox: GATEWAY, password: { env: 'UNUSED' }, recipients: ['A83627', 'A8797979'] }],
    pollIntervalSeconds: 1,
  };
  doc.senders[0]!.mesh = { mailboxes: [GP] };
  doc.senders[1]!.mesh = { mailboxes: [X26_MAILBOX] };
  doc.recipients[0]!.target = { type: 'mesh', mailbox: A83627_MAILBOX };
  const gpRule = doc.rules[0]!;
  doc.rules.push({
    ...structuredClone(gpRule),
    id: 'gp0001-over-mesh',
    sender: { ods: 'GP0001' },
    transports: ['mesh'],
  });
  doc.rules[2]!.transports = ['https', 'mesh'];
  doc.delegations = [
    ...(doc.delegations ?? []),
    {
      id: 'hub-runs-fq123-mailbox',
      actor: 'hub-supplier',
      meshMailboxes: [HUB],
      onBehalfOf: ['FQ123'],
      events: ['ITK013D'],
      expires: '2099-12-31',
    },
  ];
  change(doc);
  return configWith(world, doc);
}

interface Run {
  pipeline: EmbeddedPipeline;
  net: MemoryMeshNetwork;
  gateway: MeshGateway;
}

function start(config = meshConfig()): Run {
  const net = new MemoryMeshNetwork();
  const pipeline = embeddedPipeline(world, { config, baseDir: makeTempDir('itk3-mesh-pipe-') });
  const gateway = attachMesh(pipeline, new Map([[GATEWAY, net.client(GATEWAY)]]));
  return { pipeline, net, gateway };
}

/** A partner sends over MESH, the gateway polls and drains; returns the trace id. */
async function sendAndRun(
  run: Run,
  from: string,
  body: Uint8Array | string,
  workflowId: string,
): Promise<string> {
  const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
  run.net.deliver(from, GATEWAY, bytes, { workflowId, localId: 'gp-local-1' });
  const [summary] = await run.gateway.poll();
  expect(summary!.enqueued).toHaveLength(1);
  await run.pipeline.drain();
  return summary!.enqueued[0]!.traceId;
}

function readResponse(run: Run, mailbox: string) {
  const got = run.net.drainInbox(mailbox);
  expect(got).toHaveLength(1);
  const response = got[0]!;
  const msg = parseBundle(response.body, 'xml');
  return { response, msg };
}

describe('MESH: plain ITK3 from a registered mailbox', () => {
  it('delivers the Bundle byte-identical to the recipient mailbox and answers 20013 to the sender mailbox', async () => {
    const run = start();
    const msg = buildMessage('GP0001');
    const traceId = await sendAndRun(run, GP, msg.bytes, 'GPFED_CONSULT_REPORT');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({ status: 'delivered', itk3Code: '20013' });

    const delivered = run.net.drainInbox(A83627_MAILBOX);
    expect(delivered).toHaveLength(1);
    expect(Buffer.from(delivered[0]!.body).equals(Buffer.from(msg.bytes))).toBe(true);
    expect(delivered[0]).toMatchObject({
      from: GATEWAY,
      workflowId: 'GPFED_CONSULT_REPORT',
      localId: traceId,
    });

    const { response, msg: ack } = readResponse(run, GP);
    expect(response).toMatchObject({
      from: GATEWAY,
      workflowId: 'GPFED_CONSULT_REPORT_ACK',
      localId: traceId,
    });
    expect(ack.header.event.code).toBe('ITK008M');
    expect(ack.header.response).toMatchObject({ identifier: msg.messageId, itkCode: '20013' });
  });

  it('sends a signed ITK008M to a sender configured for signed responses', async () => {
    const run = start(meshConfig((doc) => (doc.senders[0]!.mesh!.signedResponses = true)));
    const msg = buildMessage('GP0001');
    await sendAndRun(run, GP, msg.bytes, 'GPFED_CONSULT_REPORT');
    const got = run.net.drainInbox(GP);
    expect(got).toHaveLength(1);
    const { message, header } = await verifyResponse(world, Buffer.from(got[0]!.body).toString('utf8'));
    expect(header.itk).toMatchObject({ to: 'GP0001', event: 'ITK008M' });
    expect(message.header.response).toMatchObject({ identifier: msg.messageId, itkCode: '20013' });
  });

  it("accepts a third party's mailbox for the organisations and events its grant names", async () => {
    const run = start();
    const msg = buildMessage('FQ123', { meshMailbox: HUB });
    const traceId = await sendAndRun(run, HUB, msg.bytes, 'DIGMED_MINOR_ILLNESS_PEM');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({ status: 'delivered' });
    const trail = await run.pipeline.audit.byTrace(traceId);
    expect(trail.find((e) => e.event === 'delivered')).toMatchObject({
      sender: 'FQ123',
      recipient: 'A8797979',
    });
  });

  it('accepts a sealed message over MESH (the inner JWS proves the organisation)', async () => {
    const run = start();
    const msg = buildMessage('GP0001');
    const traceId = await sendAndRun(run, GP, await sealAs(world, 'GP0001', msg), 'GPFED_CONSULT_REPORT');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    expect(Buffer.from(run.net.drainInbox(A83627_MAILBOX)[0]!.body).equals(Buffer.from(msg.bytes))).toBe(
      true,
    );
  });
});

describe('MESH: rejections get their ITK3 code through MESH', () => {
  const cases: {
    name: string;
    from: string;
    message: () => BuiltMessage;
    workflowId: string;
    stage: string;
    code: string;
    itk3Code: string;
    ackWorkflow: string;
  }[] = [
    {
      name: 'a mailbox not registered for the MessageHeader sender',
      from: X26_MAILBOX,
      message: () => buildMessage('FQ123'),
      workflowId: 'DIGMED_MINOR_ILLNESS_PEM',
      stage: 'authorise',
      code: 'MESH_MAILBOX_NOT_REGISTERED',
      itk3Code: '20012',
      ackWorkflow: 'DIGMED_MINOR_ILLNESS_PEM_ACK',
    },
    {
      name: 'a workflow id that is not the event’s',
      from: GP,
      message: () => buildMessage('GP0001'),
      workflowId: 'DIGMED_FLU_VAC',
      stage: 'verify',
      code: 'MESH_WORKFLOW_MISMATCH',
      itk3Code: '20006',
      ackWorkflow: 'DIGMED_FLU_VAC_ACK',
    },
    {
      name: 'a source endpoint naming another mailbox',
      from: GP,
      message: () => buildMessage('GP0001', { meshMailbox: 'SOMEONEELSE' }),
      workflowId: 'GPFED_CONSULT_REPORT',
      stage: 'verify',
      code: 'MESH_SOURCE_MISMATCH',
      itk3Code: '20012',
      ackWorkflow: 'GPFED_CONSULT_REPORT_ACK',
    },
    {
      name: 'an event whose rule accepts HTTPS only',
      from: X26_MAILBOX,
      message: () => buildMessage('X26'),
      workflowId: 'DIGMED_FLU_VAC',
      stage: 'authorise',
      code: 'POLICY_DENIED',
      itk3Code: '20012',
      ackWorkflow: 'DIGMED_FLU_VAC_ACK',
    },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.itk3Code} ${c.code}`, async () => {
      const run = start();
      const msg = c.message();
      const traceId = await sendAndRun(run, c.from, msg.bytes, c.workflowId);
      expect(await run.pipeline.outcome(traceId)).toMatchObject({
        status: 'rejected',
        stage: c.stage,
        code: c.code,
        itk3Code: c.itk3Code,
      });
      expect(run.net.drainInbox(A83627_MAILBOX)).toHaveLength(0);
      const { response, msg: ack } = readResponse(run, c.from);
      expect(response.workflowId).toBe(c.ackWorkflow);
      expect(ack.header.response).toMatchObject({ identifier: msg.messageId, itkCode: c.itk3Code });
    });
  }

  it('a Bundle over the size limit: 20015, checked before it is read', async () => {
    const run = start(meshConfig((doc) => (doc.limits = { ...doc.limits, maxBundleBytes: 2_000 })));
    const traceId = await sendAndRun(run, GP, buildMessage('GP0001').bytes, 'GPFED_CONSULT_REPORT');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({
      status: 'rejected',
      stage: 'authorise',
      itk3Code: '20015',
    });
    expect(readResponse(run, GP).msg.header.response).toMatchObject({ itkCode: '20015' });
  });

  it('a plain message where the rule requires sealing: refused', async () => {
    const run = start(meshConfig((doc) => (doc.rules.at(-1)!.meshSealed = 'required')));
    const traceId = await sendAndRun(run, GP, buildMessage('GP0001').bytes, 'GPFED_CONSULT_REPORT');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({ status: 'rejected', code: 'POLICY_DENIED' });
  });
});

describe('MESH: nothing for free to the unauthenticated', () => {
  it('an unknown mailbox gets no response and nothing is signed, stored or queued for it', async () => {
    const run = start();
    run.net.deliver('STRANGER1', GATEWAY, buildMessage('GP0001', { meshMailbox: 'STRANGER1' }).bytes, {
      workflowId: 'GPFED_CONSULT_REPORT',
      localId: 'gp-local-1',
    });
    const [summary] = await run.gateway.poll();
    await run.pipeline.drain();
    // Refused by the poller before the attestation signature, the claim check and the enqueue.
    expect(summary!.enqueued).toEqual([]);
    expect(summary!.refused).toMatchObject([{ reason: 'sending mailbox is not registered' }]);
    expect(run.pipeline.backlog().messages).toBe(0);
    expect(run.pipeline.audit.all().filter((e) => e.event === 'mesh-refused')).toMatchObject([
      { code: 'MESH_MAILBOX_UNKNOWN' },
    ]);
    expect(run.net.drainInbox('STRANGER1')).toHaveLength(0);
    expect(run.net.sends).toBe(0);
  });

  it('an unknown mailbox that reaches the queue anyway is refused at authenticate, unanswered', async () => {
    const run = start();
    // As if the poller had no registry check: the stage refuses it on its own.
    const [client] = run.gateway.clients.values();
    run.net.deliver('STRANGER1', GATEWAY, buildMessage('GP0001', { meshMailbox: 'STRANGER1' }).bytes, {
      workflowId: 'GPFED_CONSULT_REPORT',
      localId: 'gp-local-2',
    });
    const summary = await pollMailbox(client!, {
      ...run.pipeline.ports,
      attest: meshAttester(run.pipeline.config, run.pipeline.ports.keys),
    });
    await run.pipeline.drain();
    expect(await run.pipeline.outcome(summary.enqueued[0]!.traceId)).toMatchObject({
      status: 'rejected',
      stage: 'authenticate',
      code: 'MESH_MAILBOX_UNKNOWN',
    });
    expect(run.net.drainInbox('STRANGER1')).toHaveLength(0);
    expect(run.net.sends).toBe(0);
  });

  it('a queue writer cannot claim MESH: no attestation, or one not by the gateway key, is unauthenticated', async () => {
    const run = start();
    const body = Buffer.from(buildMessage('GP0001').bytes).toString('utf8');
    const attributes: Record<string, string> = {
      Transport: 'mesh',
      'Mex-Body-Encoding': 'utf-8',
      'Mex-From': GP,
      'Mex-To': GATEWAY,
      'Mex-WorkflowID': 'GPFED_CONSULT_REPORT',
      'Mex-MessageID': 'FORGED0001',
    };
    const unattested = run.pipeline.queues.authenticate.send(body, attributes);
    // Signed by a key the gateway holds, but not the attestation key: a sender's own key would be
    // no better than this.
    const facts = meshFactsFrom(attributes, body)!;
    const otherKid = world.recipients.A83627.key.kid;
    const wrongKey = await attestMeshFacts(run.pipeline.ports.keys, otherKid, facts).catch(() => 'x.y.z');
    const misattested = run.pipeline.queues.authenticate.send(body, {
      ...attributes,
      'Mex-MessageID': 'FORGED0002',
      'Mesh-Attestation': wrongKey,
    });
    // A genuine attestation over other facts (another sending mailbox) does not carry over.
    const genuine = await attestMeshFacts(run.pipeline.ports.keys, world.responseSigningKid, {
      ...facts,
      from: 'X26ABC9',
    });
    const swapped = run.pipeline.queues.authenticate.send(body, {
      ...attributes,
      'Mesh-Attestation': genuine,
    });
    await run.pipeline.drain();
    for (const traceId of [unattested, misattested, swapped]) {
      expect(await run.pipeline.outcome(traceId)).toMatchObject({
        status: 'rejected',
        stage: 'authenticate',
        code: 'MESH_ATTESTATION_INVALID',
        itk3Code: '20012',
      });
    }
    expect(run.net.sends).toBe(0);
    expect(run.net.drainInbox(A83627_MAILBOX)).toHaveLength(0);
  });
});

describe('MESH: sending is retried, dead-lettered with its reason, and never doubled', () => {
  it('a transient MESH failure is retried and the message is sent once', async () => {
    const run = start();
    run.net.failSends = 1;
    const msg = buildMessage('GP0001');
    const traceId = await sendAndRun(run, GP, msg.bytes, 'GPFED_CONSULT_REPORT');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({ status: 'delivered' });
    expect(run.net.drainInbox(A83627_MAILBOX)).toHaveLength(1);
    expect(run.net.drainInbox(GP)).toHaveLength(1);
  });

  it('a redelivered record whose send was recorded does not send again', async () => {
    const run = start();
    const msg = buildMessage('GP0001');
    const traceId = await sendAndRun(run, GP, msg.bytes, 'GPFED_CONSULT_REPORT');
    const location = await run.pipeline.ports.deliverer.deliver(
      { type: 'mesh', mailbox: A83627_MAILBOX, workflowId: 'GPFED_CONSULT_REPORT', localId: traceId },
      `GP0001_${msg.messageId}_${traceId}.xml`,
      msg.bytes,
      'application/fhir+xml',
    );
    expect(location).toMatch(/^mesh:\/\/A83627MBX\//);
    expect(run.net.drainInbox(A83627_MAILBOX)).toHaveLength(1);
  });

  it('a MESH that keeps failing: dead-lettered with MESH_SEND_FAILED', async () => {
    const run = start();
    run.net.failSends = 1_000;
    const traceId = await sendAndRun(run, GP, buildMessage('GP0001').bytes, 'GPFED_CONSULT_REPORT');
    expect(await run.pipeline.outcome(traceId)).toMatchObject({
      status: 'dead-lettered',
      stage: 'deliver',
      code: 'MESH_SEND_FAILED',
    });
  });
});
