/**
 * A demo-like run behind `itk3 serve` with the operator console, for the console's API and browser
 * tests: real credentials, sealed messages and the real listener. A83627 takes deliveries in a
 * folder; A8797979's target is an S3 bucket, which the embedded runtime cannot reach, so a message
 * for it is retried and dead-lettered at deliver (with short retries here).
 */
import { type RunningServer, startServer } from '../../lib/cli/serve.js';
import { generateOperatorToken } from '../../lib/console/token.js';
import type { DemoWorld } from '../../lib/testkit/world.js';
import {
  buildMessage,
  configWith,
  credentialFor,
  keyService,
  makeTempDir,
  type SenderOds,
  sealAs,
  sealCustom,
} from './world.js';

export interface ConsoleRun {
  server: RunningServer;
  origin: string;
  token: string;
  /** Tracking ids of what was submitted, by what it is. */
  traces: {
    delivered: string[];
    hostile: string;
    policyDenied: string;
    duplicate: string;
    deadLettered: string;
  };
  /** Every credential and sealed message sent: none of them may ever appear in a console answer. */
  secrets: string[];
}

export async function startConsoleRun(world: DemoWorld): Promise<ConsoleRun> {
  const doc = structuredClone(world.configDoc);
  doc.recipients.find((r) => r.ods === 'A8797979')!.target = {
    type: 's3',
    bucket: 'itk3-unreachable-bucket',
    prefix: '',
  };
  const token = generateOperatorToken();
  const server = await startServer({
    config: configWith(world, doc),
    keys: keyService(world),
    baseDir: makeTempDir('itk3-console-'),
    port: 0,
    stages: { deliver: { visibilityTimeoutSeconds: 0.2, maxReceiveCount: 2 } },
    console: { operatorToken: token },
  });
  const origin = `http://127.0.0.1:${server.port}`;
  const secrets: string[] = [];

  async function submit(sender: SenderOds, sealed: Promise<string>): Promise<string> {
    const credential = await credentialFor(world, sender, Date.now());
    const body = await sealed;
    secrets.push(credential, body);
    const response = await fetch(`${origin}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}` },
      body,
    });
    if (response.status !== 202) throw new Error(`serve refused a test message: ${response.status}`);
    return ((await response.json()) as { trackingId: string }).trackingId;
  }

  const first = buildMessage('X26');
  const second = buildMessage('GP0001');
  const forged = buildMessage('X26');
  const unlisted = buildMessage('X26', { to: 'A8797979' });
  const unreachable = buildMessage('FQ123');
  const delivered = [
    await submit('X26', sealAs(world, 'X26', first)),
    await submit('GP0001', sealAs(world, 'GP0001', second)),
  ];
  // Delivered before its duplicate arrives, so which of the two is the duplicate is fixed.
  await server.idle();
  const traces = {
    delivered,
    // X26's routing and credential, GP0001's signing key: refused at verify (SIGNATURE_KEY_NOT_SENDERS, 20012).
    hostile: await submit('X26', sealCustom(world, forged, { signer: 'GP0001', recipientKey: 'A83627' })),
    // No policy rule lets X26 send to A8797979: refused at authorise (POLICY_DENIED, 20012).
    policyDenied: await submit('X26', sealAs(world, 'X26', unlisted)),
    // GP0001's message again, freshly sealed: refused at verify (DUPLICATE_MESSAGE, 20007).
    duplicate: await submit('GP0001', sealAs(world, 'GP0001', second)),
    deadLettered: await submit('FQ123', sealAs(world, 'FQ123', unreachable)),
  };
  await server.idle();
  return { server, origin, token, traces, secrets };
}
