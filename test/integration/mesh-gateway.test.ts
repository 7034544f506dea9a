/**
 * The gateway on MESH, end to end, against NHS England's MESH sandbox (AUTH_MODE=full) with NHS
 * England's Python mesh-client as the GP system: the GP sends the fixture ITK3 samples as plain XML
 * over MESH; `itk3 mesh poll` (the real CLI, configuration and keystore files, secrets by reference)
 * polls the gateway mailbox, checks, delivers to the recipient's mailbox byte-identical and answers
 * the GP through MESH. Also: over 5 MB (20015), a wrong workflow id (20006, a signed response), a
 * mailbox not registered to the MessageHeader's sender (20012), and the sandbox stopped mid-poll
 * and restarted (nothing lost, nothing delivered twice).
 *
 * Mailboxes (the sandbox's canned ones): X26ABC1 the GP system (GP0001, and the fixtures' source
 * endpoint set to it), X26ABC2 the gateway, X26ABC3 the recipient A83627's system.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { writeKeystore } from '../../lib/adapters/local/keystore.js';
import { main } from '../../lib/cli/main.js';
import { loadConfig } from '../../lib/config/load.js';
import type { PipelineConfigInput } from '../../lib/config/schema.js';
import { parseBundle } from '../../lib/itk3/index.js';
import { loadSamples } from '../../lib/itk3/samples.js';
import { attachMesh, HttpMeshClient, type MeshClient } from '../../lib/mesh/index.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  testWorld,
  verifyResponse,
} from '../support/world.js';
import {
  describeWithMeshSandbox,
  MAILBOX_PASSWORD,
  MESH_SHARED_KEY,
  partnerReceive,
  partnerSend,
  resetMailbox,
  sandboxScript,
} from './support/mesh.js';

const GP = 'X26ABC1';
const GATEWAY = 'X26ABC2';
const RECIPIENT = 'X26ABC3';
const SHARED_KEY_ENV = 'ITK3_TEST_MESH_SHARED_KEY';

const sample = (name: string) => {
  const found = loadSamples().find((s) => s.name === name);
  if (!found) throw new Error(`no sample ${name}`);
  return found;
};
/** A fixture as the sandbox GP sends it: its MessageHeader source endpoint is the GP's mailbox. */
const asSentBy = (name: string, endpoint: string, mailbox: string) =>
  Buffer.from(
    Buffer.from(sample(name).bytes)
      .toString('utf8')
      .replace(`<endpoint value="${endpoint}"`, `<endpoint value="${mailbox}"`),
  );

describeWithMeshSandbox('MESH end to end: the gateway between mesh-client partners on the sandbox', (url) => {
  let world: DemoWorld;
  let dir: string;
  let keystore: string;

  /** The world's configuration on MESH, written to a file; `signed`: GP0001 wants signed responses. */
  const configFile = (name: string, signed = false): string => {
    const doc = structuredClone(world.configDoc) as PipelineConfigInput;
    const passwordFile = join(dir, 'gateway-mailbox-password');
    writeFileSync(passwordFile, `${MAILBOX_PASSWORD}\n`, { mode: 0o600 });
    doc.mesh = {
      url,
      sharedKey: { env: SHARED_KEY_ENV },
      mailboxes: [{ mailbox: GATEWAY, password: { file: passwordFile }, recipients: ['A83627', 'A8797979'] }],
      pollIntervalSeconds: 1,
    };
    doc.senders[0]!.mesh = { mailboxes: [GP], signedResponses: signed };
    doc.recipients[0]!.target = { type: 'mesh', mailbox: RECIPIENT };
    doc.rules.push({
      ...structuredClone(doc.rules[0]!),
      id: 'gp0001-over-mesh',
      sender: { ods: 'GP0001' },
      transports: ['mesh'],
    });
    doc.rules[1]!.transports = ['https', 'mesh'];
    doc.rules[2]!.transports = ['https', 'mesh'];
    // X26ABC1 also carries X26's immunisation reports, as a supplier's shared mailbox: a grant.
    doc.delegations = [
      ...(doc.delegations ?? []),
      {
        id: 'gp-system-mailbox-for-x26',
        actor: 'gp-system-supplier',
        meshMailboxes: [GP],
        onBehalfOf: ['X26'],
        events: ['ITK009D'],
        expires: '2099-12-31',
      },
    ];
    loadConfig(doc);
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify(doc));
    return file;
  };

  /** `itk3 mesh poll` in-process; its JSON lines. */
  const meshPoll = async (config: string, out: string) => {
    const lines: string[] = [];
    const code = await main(['mesh', 'poll', '--config', config, '--keystore', keystore, '--out', out], (l) =>
      lines.push(l),
    );
    return { code, results: lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
  };

  beforeAll(async () => {
    world = await testWorld();
    dir = makeTempDir('itk3-mesh-e2e-');
    keystore = join(dir, 'keystore.json');
    writeKeystore(keystore, world.keystore);
    process.env[SHARED_KEY_ENV] = MESH_SHARED_KEY;
  });
  afterAll(() => {
    delete process.env[SHARED_KEY_ENV];
    removeTempDirs();
  });
  beforeEach(async () => {
    for (const m of [GP, GATEWAY, RECIPIENT]) await resetMailbox(m);
  });

  it('a consultation report sent with mesh-client is delivered byte-identical and answered with ITK008M 20013', async () => {
    const body = asSentBy('consultation_report.xml', 'MESHGP0001', GP);
    partnerSend({ mailbox: GP, to: GATEWAY, body, workflowId: 'GPFED_CONSULT_REPORT', localId: 'ehr-4711' });
    const { code, results } = await meshPoll(configFile('config.json'), join(dir, 'run-main'));
    expect(code).toBe(0);
    expect(results).toEqual([
      expect.objectContaining({ mailbox: GATEWAY, status: 'delivered', itk3Code: '20013' }),
    ]);
    const trackingId = results[0]!.trackingId as string;

    const delivered = partnerReceive(RECIPIENT);
    expect(delivered).toHaveLength(1);
    expect(delivered[0]!.body.equals(body)).toBe(true);
    expect(delivered[0]).toMatchObject({
      sender: GATEWAY,
      workflow_id: 'GPFED_CONSULT_REPORT',
      local_id: trackingId,
    });

    const answers = partnerReceive(GP);
    expect(answers).toHaveLength(1);
    expect(answers[0]).toMatchObject({
      sender: GATEWAY,
      workflow_id: 'GPFED_CONSULT_REPORT_ACK',
      local_id: trackingId,
    });
    const ack = parseBundle(answers[0]!.body, 'xml');
    expect(ack.header.event.code).toBe('ITK008M');
    expect(ack.header.response).toMatchObject({
      identifier: parseBundle(body, 'xml').header.id,
      code: 'ok',
      itkCode: '20013',
    });
  });

  it('a message over 5 MB is answered 20015 through MESH and not delivered', async () => {
    const report = asSentBy('consultation_report.xml', 'MESHGP0001', GP);
    const body = Buffer.concat([report, Buffer.from(`<!--${'x'.repeat(5 * 1024 * 1024)}-->`)]);
    partnerSend({ mailbox: GP, to: GATEWAY, body, workflowId: 'GPFED_CONSULT_REPORT' });
    const { results } = await meshPoll(configFile('config.json'), join(dir, 'run-large'));
    expect(results).toEqual([
      expect.objectContaining({ status: 'rejected', itk3Code: '20015', error: 'MESSAGE_TOO_LARGE' }),
    ]);
    expect(partnerReceive(RECIPIENT)).toHaveLength(0);
    const answers = partnerReceive(GP);
    expect(answers).toHaveLength(1);
    expect(parseBundle(answers[0]!.body, 'xml').header.response).toMatchObject({ itkCode: '20015' });
  });

  it('a wrong workflow id is answered 20006, signed for a sender that asked for signed responses', async () => {
    const body = asSentBy('consultation_report.xml', 'MESHGP0001', GP);
    partnerSend({ mailbox: GP, to: GATEWAY, body, workflowId: 'DIGMED_FLU_VAC' });
    const { results } = await meshPoll(configFile('config-signed.json', true), join(dir, 'run-workflow'));
    expect(results).toEqual([
      expect.objectContaining({
        status: 'rejected',
        stage: 'verify',
        itk3Code: '20006',
        error: 'MESH_WORKFLOW_MISMATCH',
      }),
    ]);
    expect(partnerReceive(RECIPIENT)).toHaveLength(0);
    const answers = partnerReceive(GP);
    expect(answers).toHaveLength(1);
    expect(answers[0]!.workflow_id).toBe('DIGMED_FLU_VAC_ACK');
    const { message, header } = await verifyResponse(world, answers[0]!.body.toString('utf8'));
    expect(header.itk).toMatchObject({ from: world.configDoc.gatewayOds, to: 'GP0001', event: 'ITK008M' });
    expect(message.header.response).toMatchObject({
      itkCode: '20006',
      diagnostics: 'MESH_WORKFLOW_MISMATCH',
    });
  });

  it("a mailbox not registered to the MessageHeader's sender is answered 20012", async () => {
    // FQ123's minor illness referral, sent from GP0001's mailbox (its endpoint set to that mailbox).
    const body = asSentBy('engage_jack_smith_mirc.xml', 'NOROT003', GP);
    partnerSend({ mailbox: GP, to: GATEWAY, body, workflowId: 'DIGMED_MINOR_ILLNESS_PEM' });
    const { results } = await meshPoll(configFile('config.json'), join(dir, 'run-unregistered'));
    expect(results).toEqual([
      expect.objectContaining({
        status: 'rejected',
        stage: 'authorise',
        itk3Code: '20012',
        error: 'MESH_MAILBOX_NOT_REGISTERED',
      }),
    ]);
    const answers = partnerReceive(GP);
    expect(answers).toHaveLength(1);
    expect(answers[0]!.workflow_id).toBe('DIGMED_MINOR_ILLNESS_PEM_ACK');
    expect(parseBundle(answers[0]!.body, 'xml').header.response).toMatchObject({
      identifier: parseBundle(body, 'xml').header.id,
      itkCode: '20012',
    });
  });

  it('the sandbox stopped mid-poll and restarted: nothing lost, nothing delivered twice', async () => {
    const body = asSentBy('consultation_report.xml', 'MESHGP0001', GP);
    const meshId = partnerSend({ mailbox: GP, to: GATEWAY, body, workflowId: 'GPFED_CONSULT_REPORT' });
    const config = loadConfig(JSON.parse(readFileSync(configFile('config.json'), 'utf8')));
    const pipeline = embeddedPipeline(world, { config, baseDir: makeTempDir('itk3-mesh-e2e-crash-') });
    const connect = () =>
      new HttpMeshClient({ url, mailbox: GATEWAY, password: MAILBOX_PASSWORD, sharedKey: MESH_SHARED_KEY });
    // The first pass enqueues the message, then MESH goes away before the acknowledgement.
    const real = connect();
    const stopsBeforeAck: MeshClient = {
      mailbox: real.mailbox,
      handshake: () => real.handshake(),
      listInbox: (opts) => real.listInbox(opts),
      listInboxRich: (opts) => real.listInboxRich(opts),
      download: (id, opts) => real.download(id, opts),
      acknowledge: async (id) => {
        sandboxScript('stop');
        return real.acknowledge(id);
      },
      send: (to, bytes, opts) => real.send(to, bytes, opts),
      track: (id) => real.track(id),
      close: () => real.close(),
    };
    const first = attachMesh(pipeline, new Map([[GATEWAY, stopsBeforeAck]]));
    let interrupted: Awaited<ReturnType<typeof first.poll>>[number] | undefined;
    try {
      [interrupted] = await first.poll();
    } finally {
      real.close();
      sandboxScript('start');
    }
    expect(interrupted!.stopped?.reason).toBe('transient-failure');
    // On the queue, not acknowledged: the pass ended at the acknowledgement.
    const queued = pipeline.queues.authenticate
      .peekAll()
      .filter((m) => m.attributes['Mex-MessageID'] === meshId);
    expect(queued).toHaveLength(1);

    const again = connect();
    const second = attachMesh(pipeline, new Map([[GATEWAY, again]]));
    const [resumed] = await second.poll();
    // Still in MESH (never acknowledged), already on the queue: acknowledged now, not enqueued again.
    expect(resumed!.enqueued.map((e) => e.meshMessageId)).not.toContain(meshId);
    const traceId = resumed!.reacknowledged.find((e) => e.meshMessageId === meshId)?.traceId;
    expect(traceId).toBe(queued[0]!.messageId);
    await pipeline.drain();
    expect(await pipeline.outcome(traceId!)).toMatchObject({ status: 'delivered', itk3Code: '20013' });
    const delivered = partnerReceive(RECIPIENT).filter((m) => m.body.equals(body));
    expect(delivered).toHaveLength(1);
    expect(partnerReceive(GP).filter((m) => m.local_id === traceId)).toHaveLength(1);
    const [after] = await second.poll();
    expect(after!.enqueued).toHaveLength(0);
    again.close();
  });
});
