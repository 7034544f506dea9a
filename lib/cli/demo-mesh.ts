/**
 * `itk3 demo --mesh`: the gateway on MESH, as a new user sees it. NHS England's MESH sandbox
 * (installed into .mesh/venv by scripts/mesh-sandbox.sh) is started on a free loopback port — or
 * the one named by ITK3_MESH_SANDBOX is used —, a GP system sends the consultation report with NHS
 * England's Python mesh-client, the gateway's poller takes it through the embedded pipeline, and
 * the demo shows the Bundle arriving byte-identical in the recipient's mailbox and the ITK008M
 * 20013 the GP system receives and verifies. Without the sandbox it says how to install it and
 * passes (the MESH part is optional; the main demo needs nothing but Node).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { compactVerify, importJWK } from 'jose';
import { findKey, publicJwk, writeKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import { SqliteState } from '../adapters/local/sqlite-state.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { PipelineConfigInput } from '../config/schema.js';
import { loadSamples, parseBundle, projectRoot } from '../itk3/index.js';
import { attachMesh, HttpMeshClient, meshClientsFromConfig } from '../mesh/index.js';
import { systemClock } from '../ports/index.js';
import { EmbeddedPipeline } from '../runtime/embedded.js';
import { meshPartnerReceive, meshPartnerSend } from '../testkit/mesh-partner.js';
import { createWorld, type DemoWorld } from '../testkit/world.js';
import { renderTable } from './table.js';

/** The sandbox's canned mailboxes (mesh_sandbox/store/data/mailboxes.jsonl), password `password`. */
export const MESH_DEMO_MAILBOXES = { gp: 'X26ABC1', gateway: 'X26ABC2', recipient: 'X26ABC3' } as const;
const SANDBOX_PASSWORD = 'password';
const WORKFLOW = 'GPFED_CONSULT_REPORT';
const INSTALL_HINT =
  'install it once with `npm run demo:mesh` or `bash scripts/mesh-sandbox.sh install` ' +
  "(NHS England's mesh-sandbox and mesh-client from PyPI into .mesh/venv; needs python3), or set ITK3_MESH_SANDBOX";

export interface MeshDemoOptions {
  /** Working folder of the MESH part (keystore, configuration, state). */
  out: string;
  /** A running sandbox to use (ITK3_MESH_SANDBOX); otherwise the demo starts and stops its own. */
  sandbox?: string;
  /** The running sandbox's shared secret (ITK3_MESH_SHARED_KEY, default TestKey). */
  sandboxSharedKey?: string;
  /** Where scripts/mesh-sandbox.sh installs the venv (default `<project>/.mesh`). */
  meshDir?: string;
  write: (line: string) => void;
}

export interface MeshDemoResult {
  status: 'skipped' | 'passed' | 'failed';
  /** How the GP system talked to MESH. */
  sender?: 'mesh-client' | 'project-client';
  /** The sandbox the demo started itself (stopped again before returning). */
  startedSandbox?: { pid: number; url: string };
}

/**
 * The demo world's configuration on MESH: the gateway polls `gateway`, GP0001 sends from `gp`
 * (asking for signed responses, so the GP system can verify the ITK008M), A83627 receives in
 * `recipient`, and the GP0001 consultation report rule also accepts MESH.
 */
export function meshWorldConfig(
  world: DemoWorld,
  mesh: { url: string; sharedKeyFile: string; passwordFile: string; pollIntervalSeconds?: number },
  mailboxes: { gp: string; gateway: string; recipient: string } = MESH_DEMO_MAILBOXES,
): PipelineConfigInput {
  const doc = structuredClone(world.configDoc) as PipelineConfigInput;
  doc.mesh = {
    url: mesh.url,
    sharedKey: { file: mesh.sharedKeyFile },
    mailboxes: [
      { mailbox: mailboxes.gateway, password: { file: mesh.passwordFile }, recipients: ['A83627'] },
    ],
    pollIntervalSeconds: mesh.pollIntervalSeconds ?? 60,
  };
  const gp = doc.senders.find((s) => s.ods === 'GP0001');
  const recipient = doc.recipients.find((r) => r.ods === 'A83627');
  const rule = doc.rules.find((r) => r.sender.ods === 'GP0001' && r.event === 'ITK007C');
  if (!gp || !recipient || !rule) throw new Error('the demo world lacks GP0001, A83627 or their rule');
  gp.mesh = { mailboxes: [mailboxes.gp], signedResponses: true };
  recipient.target = { type: 'mesh', mailbox: mailboxes.recipient };
  // MESH authenticates the mailbox, not an issuer's client: the rule names the organisation only.
  doc.rules.push({
    ...structuredClone(rule),
    id: 'gp0001-consultation-over-mesh',
    sender: { ods: 'GP0001' },
    transports: ['mesh'],
  });
  return doc;
}

/**
 * The world on the sandbox, on disk for the gateway (this demo, or a real `itk3` process in a
 * test): the shared key and the gateway's mailbox password in 0600 files the configuration points
 * at, config.json and keystore.json in `dir`.
 */
export function writeMeshWorld(
  world: DemoWorld,
  dir: string,
  mesh: { url: string; sharedKey: string; pollIntervalSeconds?: number },
): { config: LoadedConfig; configFile: string; keystoreFile: string } {
  mkdirSync(dir, { recursive: true });
  const sharedKeyFile = join(dir, 'mesh-shared-key');
  const passwordFile = join(dir, 'gateway-mailbox-password');
  writeFileSync(sharedKeyFile, `${mesh.sharedKey}\n`, { mode: 0o600 });
  writeFileSync(passwordFile, `${SANDBOX_PASSWORD}\n`, { mode: 0o600 });
  const doc = meshWorldConfig(world, { ...mesh, sharedKeyFile, passwordFile });
  const config = loadConfig(doc);
  const configFile = join(dir, 'config.json');
  const keystoreFile = join(dir, 'keystore.json');
  writeFileSync(configFile, `${JSON.stringify(doc, null, 2)}\n`);
  writeKeystore(keystoreFile, world.keystore);
  return { config, configFile, keystoreFile };
}

/** The consultation report (fixture, or the project's built equivalent) as the GP system sends it. */
export function consultationReportFrom(gpMailbox: string): { bytes: Buffer; source: string } {
  const sample = loadSamples().find((s) => s.name === 'consultation_report.xml');
  if (!sample) throw new Error('no consultation_report.xml sample');
  const text = Buffer.from(sample.bytes).toString('utf8');
  // Its MessageHeader source endpoint is the GP's MESH mailbox (MESH binds Mex-From to it).
  const bytes = Buffer.from(text.replace(/<endpoint value="[^"]*"/, `<endpoint value="${gpMailbox}"`));
  return { bytes, source: sample.source === 'fixture' ? 'NHS fixture' : 'built by the project' };
}

export async function runMeshDemo(opts: MeshDemoOptions): Promise<MeshDemoResult> {
  const { write } = opts;
  const meshDir = opts.meshDir ?? join(projectRoot(), '.mesh');
  const python = join(meshDir, 'venv/bin/python');
  const uvicorn = join(meshDir, 'venv/bin/uvicorn');
  if (!opts.sandbox && !existsSync(uvicorn)) {
    write(`MESH part skipped: NHS England's MESH sandbox is not installed — ${INSTALL_HINT}.`);
    return { status: 'skipped' };
  }
  const hasMeshClient =
    existsSync(python) && spawnSync(python, ['-c', 'import mesh_client'], { stdio: 'ignore' }).status === 0;

  write('');
  write('ITK3 over MESH — NHS England’s MESH sandbox (AUTH_MODE=full) and mesh-client');
  mkdirSync(opts.out, { recursive: true });
  let sandbox: RunningSandbox | undefined;
  let url: string;
  let sharedKey: string;
  if (opts.sandbox) {
    url = opts.sandbox;
    sharedKey = opts.sandboxSharedKey ?? 'TestKey';
    write(`sandbox: ${url} (ITK3_MESH_SANDBOX; mailboxes X26ABC1-3 emptied first)`);
    for (const m of Object.values(MESH_DEMO_MAILBOXES)) await resetSandboxMailbox(url, m);
  } else {
    sharedKey = randomBytes(16).toString('hex');
    sandbox = await startSandbox(uvicorn, join(opts.out, 'sandbox'), sharedKey);
    url = sandbox.url;
    write(
      `sandbox: started ${url} (pid ${sandbox.process.pid}, store and log in ${join(opts.out, 'sandbox')})`,
    );
  }
  const startedSandbox = sandbox ? { pid: sandbox.process.pid!, url } : undefined;
  try {
    const passed = await exchange({ ...opts, url, sharedKey, python, hasMeshClient });
    return {
      status: passed ? 'passed' : 'failed',
      sender: hasMeshClient ? 'mesh-client' : 'project-client',
      ...(startedSandbox ? { startedSandbox } : {}),
    };
  } finally {
    if (sandbox) {
      await sandbox.stop();
      write(`sandbox: stopped (pid ${sandbox.process.pid})`);
    }
  }
}

async function exchange(
  opts: MeshDemoOptions & { url: string; sharedKey: string; python: string; hasMeshClient: boolean },
): Promise<boolean> {
  const { write, out, url } = opts;
  const { gp, gateway, recipient } = MESH_DEMO_MAILBOXES;
  const partner = opts.hasMeshClient
    ? meshClientPartner(opts.python, url, opts.sharedKey)
    : projectClientPartner(url, opts.sharedKey);
  if (!opts.hasMeshClient) {
    write(
      `mesh-client is not installed in ${opts.python.replace(/\/bin\/python$/, '')}: the GP system uses the project's own MESH client instead`,
    );
  }

  const world = await createWorld({ recipientModulus: 2048 });
  const { config } = writeMeshWorld(world, out, { url, sharedKey: opts.sharedKey });
  write(
    `mailboxes: GP0001's system ${gp} → gateway ${gateway} → A83627's system ${recipient}; config.json and keystore.json in ${out}`,
  );

  const report = consultationReportFrom(gp);
  const sentHeader = parseBundle(report.bytes, 'xml').header;
  const meshId = await partner.send(gp, gateway, report.bytes, WORKFLOW);
  write(
    `1. ${gp} sent consultation_report.xml (${report.source}, ${report.bytes.length} bytes, ITK007C, MessageHeader ${sentHeader.id}) with ${partner.name}: MESH message ${meshId}`,
  );

  const state = new SqliteState(join(out, 'state.db'), { clock: systemClock });
  const pipeline = new EmbeddedPipeline({
    config,
    keys: new SoftwareKeyService(world.keystore),
    baseDir: out,
    clock: systemClock,
    state,
  });
  const meshGateway = attachMesh(pipeline, meshClientsFromConfig(config));
  let traceId: string | undefined;
  let outcome: Awaited<ReturnType<EmbeddedPipeline['outcome']>> | undefined;
  try {
    const [summary] = await meshGateway.poll();
    await pipeline.drain();
    traceId = summary?.enqueued.find((e) => e.meshMessageId === meshId)?.traceId;
    if (traceId) outcome = await pipeline.outcome(traceId);
  } finally {
    meshGateway.close();
    state.close();
  }
  write(
    `2. the gateway polled ${gateway}: ${traceId ? `tracking id ${traceId}, ${outcome?.status} at ${outcome?.stage}, ITK3 ${outcome?.itk3Code ?? '-'}` : 'the message was not taken'}`,
  );

  const delivered = await partner.receive(recipient);
  const arrived = delivered.find((m) => m.localId === traceId);
  const identical = arrived?.body.equals(report.bytes) === true;
  write(
    `3. ${recipient} received ${delivered.length} message(s) with ${partner.name}: ${arrived ? `from ${arrived.sender}, workflow ${arrived.workflowId}, ${identical ? 'byte-identical to what the GP sent' : 'NOT byte-identical'}` : 'not the report'}`,
  );

  const answers = await partner.receive(gp);
  const answer = answers.find((m) => m.localId === traceId);
  const verdict = answer ? await verifyAck(world, answer.body, sentHeader.id) : undefined;
  write(
    `4. ${gp} received ${answers.length} answer(s) with ${partner.name}: ${answer ? `workflow ${answer.workflowId}, ${verdict!.detail}` : 'no ITK008M'}`,
  );

  const checks: [string, boolean][] = [
    ['sent by the GP system over MESH', meshId.length > 0],
    ['taken by the gateway poller and delivered', outcome?.status === 'delivered'],
    ['in the recipient mailbox byte-identical', identical],
    ['ITK008M 20013 at the sender, signature verified', verdict?.ok === true],
  ];
  write('');
  write(
    renderTable(
      ['MESH check', 'as expected'],
      checks.map(([what, ok]) => [what, ok ? 'yes' : 'NO']),
    ),
  );
  const passed = checks.every(([, ok]) => ok);
  write(
    passed
      ? 'MESH: the report went GP → gateway → recipient and was answered 20013.'
      : 'MESH: SOME CHECKS FAILED.',
  );
  return passed;
}

/** The GP system's view of the ITK008M: the gateway's ES256 signature, then the response itself. */
async function verifyAck(
  world: DemoWorld,
  body: Buffer,
  sentMessageId: string,
): Promise<{ ok: boolean; detail: string }> {
  const entry = findKey(world.keystore, world.responseSigningKid);
  if (!entry) return { ok: false, detail: 'no response-signing key to verify with' };
  try {
    const key = await importJWK(publicJwk(entry), 'ES256');
    const { payload } = await compactVerify(body.toString('utf8').trim(), key, { algorithms: ['ES256'] });
    const response = parseBundle(payload, 'xml').header;
    const ok =
      response.event.code === 'ITK008M' &&
      response.response?.identifier === sentMessageId &&
      response.response?.itkCode === '20013';
    return {
      ok,
      detail: `${response.event.code} ${response.response?.itkCode ?? '?'} for MessageHeader ${response.response?.identifier ?? '?'}, signature verified with the gateway's published key (${entry.kid})`,
    };
  } catch (error) {
    return { ok: false, detail: `the answer did not verify: ${(error as Error).message}` };
  }
}

interface ReceivedMessage {
  sender: string | undefined;
  workflowId: string | undefined;
  localId: string | undefined;
  body: Buffer;
}

interface Partner {
  name: string;
  send(from: string, to: string, body: Buffer, workflowId: string): Promise<string>;
  /** Everything waiting in `mailbox`, each acknowledged. */
  receive(mailbox: string): Promise<ReceivedMessage[]>;
}

/** NHS England's Python mesh-client (lib/testkit/mesh-partner.ts). */
function meshClientPartner(python: string, url: string, sharedKey: string): Partner {
  const access = { python, url, password: SANDBOX_PASSWORD, sharedKey };
  return {
    name: "NHS England's mesh-client",
    async send(from, to, body, workflowId) {
      return meshPartnerSend(access, { mailbox: from, to, body, workflowId });
    },
    async receive(mailbox) {
      return meshPartnerReceive(access, mailbox).map((m) => ({
        sender: m.sender,
        workflowId: m.workflow_id,
        localId: m.local_id ?? undefined,
        body: m.body,
      }));
    },
  };
}

/** Fallback when mesh-client is absent: the project's own MESH client plays the GP system. */
function projectClientPartner(url: string, sharedKey: string): Partner {
  const client = (mailbox: string) =>
    new HttpMeshClient({ url, mailbox, password: SANDBOX_PASSWORD, sharedKey });
  return {
    name: "the project's MESH client",
    async send(from, to, body, workflowId) {
      const mesh = client(from);
      try {
        await mesh.handshake();
        return (await mesh.send(to, body, { workflowId })).messageId;
      } finally {
        mesh.close();
      }
    },
    async receive(mailbox) {
      const mesh = client(mailbox);
      try {
        await mesh.handshake();
        const out: ReceivedMessage[] = [];
        for (const id of (await mesh.listInbox()).messageIds) {
          const m = await mesh.download(id);
          out.push({
            sender: m.from,
            workflowId: m.workflowId,
            localId: m.localId,
            body: Buffer.from(m.body),
          });
          await mesh.acknowledge(id);
        }
        return out;
      } finally {
        mesh.close();
      }
    },
  };
}

interface RunningSandbox {
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** The sandbox as scripts/mesh-sandbox.sh runs it, on a free loopback port, in its own process group. */
async function startSandbox(uvicorn: string, dir: string, sharedKey: string): Promise<RunningSandbox> {
  const store = join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const port = await freeLoopbackPort();
  const url = `http://127.0.0.1:${port}`;
  const logFile = join(dir, 'sandbox.log');
  const log = openSync(logFile, 'w');
  const child = spawn(uvicorn, ['mesh_sandbox.api:app', '--host', '127.0.0.1', '--port', String(port)], {
    env: {
      ...process.env,
      AUTH_MODE: 'full',
      STORE_MODE: 'file',
      MAILBOXES_DATA_DIR: store,
      SHARED_KEY: sharedKey,
    },
    stdio: ['ignore', log, log],
    detached: true,
  });
  closeSync(log);
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  // Ctrl-C during the demo must not leave the sandbox (its own process group) running.
  const onInterrupt = () => {
    signalGroup(child.pid!, 'SIGTERM');
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  const stop = async () => {
    process.off('SIGINT', onInterrupt);
    if (gone) return;
    signalGroup(child.pid!, 'SIGTERM');
    const killed = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!killed) {
      signalGroup(child.pid!, 'SIGKILL');
      await exited;
    }
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (gone) throw new Error(`the MESH sandbox exited before it was healthy: ${tail(logFile)}`);
    if (await healthy(url)) return { url, process: child, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the MESH sandbox was not healthy after 60 s: ${tail(logFile)}`);
    }
    await sleep(200);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

/** Empty a mailbox through the sandbox's admin API (a sandbox only: no credentials). */
export async function resetSandboxMailbox(url: string, mailbox: string): Promise<void> {
  const response = await fetch(`${url}/messageexchange/admin/reset/${mailbox}`, { method: 'DELETE' });
  if (!response.ok)
    throw new Error(`the sandbox at ${url} refused to reset ${mailbox}: HTTP ${response.status}`);
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? done(address.port) : fail(new Error('no port')),
      );
    });
  });
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '(no log)';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
