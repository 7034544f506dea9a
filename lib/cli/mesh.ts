/**
 * `itk3 mesh poll` (one pass) and the polling loop of `itk3 serve --mesh`: the gateway's MESH
 * mailboxes (the configuration's `mesh` section) polled with the project's poller into the embedded
 * pipeline, which then delivers (to `mesh` targets through MESH) and answers MESH senders through
 * MESH. Both use the same code (lib/mesh/gateway.ts).
 */
import { readKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import type { LoadedConfig } from '../config/load.js';
import { loadConfigFile } from '../config/load.js';
import { UsageError } from '../errors.js';
import {
  attachMesh,
  type MeshClient,
  type MeshGateway,
  type MeshPollSummary,
  meshClientsFromConfig,
} from '../mesh/index.js';
import type { EmbeddedPipeline } from '../runtime/embedded.js';
import { commandLinePipeline, openRunState } from './ops.js';

type Write = (line: string) => void;

/**
 * Test-only hook for the durability suite (test/durability/mesh-poller.test.ts): with
 * ITK3_TEST_MESH_HOLD_BEFORE_ACK=N the process stops before its Nth MESH acknowledgement (after
 * that message's enqueue was committed) and says so on stderr, so a test can kill -9 it exactly in
 * the poller's crash window. Unset in every real run: the clients are returned untouched.
 */
export const HOLD_BEFORE_ACK_ENV = 'ITK3_TEST_MESH_HOLD_BEFORE_ACK';

/**
 * The gateway's MESH clients, one per mailbox of config "mesh". Reads every mailbox password and
 * the shared key now, so a command can stop on a missing one before it opens state or listens.
 */
export function gatewayClients(config: LoadedConfig, err: Write): Map<string, MeshClient> {
  requireMesh(config);
  const clients = meshClientsFromConfig(config);
  const hold = Number(process.env[HOLD_BEFORE_ACK_ENV] ?? '');
  if (!Number.isInteger(hold) || hold < 1) return clients;
  let acknowledgements = 0;
  for (const [mailbox, client] of clients) {
    const acknowledge = client.acknowledge.bind(client);
    client.acknowledge = async (id: string) => {
      acknowledgements += 1;
      if (acknowledgements === hold) {
        err(`mesh: test hook: holding before acknowledging MESH message ${id} in ${mailbox}`);
        // A timer keeps the event loop alive: a bare pending promise would let Node exit (13).
        await new Promise<never>(() => setInterval(() => undefined, 60_000));
      }
      return acknowledge(id);
    };
  }
  return clients;
}

function requireMesh(config: LoadedConfig): NonNullable<LoadedConfig['doc']['mesh']> {
  if (!config.doc.mesh) {
    throw new UsageError(
      'the configuration has no "mesh" section (the gateway mailboxes and MESH connection)',
    );
  }
  return config.doc.mesh;
}

/** `itk3 mesh poll`: one pass over the gateway's mailboxes, one JSON line per MESH message. */
export async function meshPoll(
  options: { config?: string; keystore: string; out: string },
  write: Write,
): Promise<number> {
  if (!options.config) throw new UsageError('--config is required');
  const config = loadConfigFile(options.config);
  requireMesh(config);
  const keys = new SoftwareKeyService(readKeystore(options.keystore));
  // The mailbox passwords and shared key are read first: one that is missing stops the command
  // before it opens the run's state and resumes work there.
  const clients = gatewayClients(config, (l) => process.stderr.write(`${l}\n`));
  // The run's durable state (docs/DURABILITY.md): an enqueued MESH message is committed before
  // the poller acknowledges it, and a killed pass resumes on the next run.
  const state = openRunState(options.out);
  const pipeline = commandLinePipeline(config, keys, state, { mesh: true });
  pipeline.resume();
  const gateway = attachMesh(pipeline, clients);
  try {
    const summaries = await gateway.poll();
    await pipeline.drain();
    return await report(pipeline, summaries, write);
  } finally {
    gateway.close();
    state.close();
  }
}

/** One JSON line per MESH message of the pass, with its outcome in the pipeline. */
async function report(
  pipeline: EmbeddedPipeline,
  summaries: MeshPollSummary[],
  write: Write,
): Promise<number> {
  let failed = 0;
  for (const s of summaries) {
    for (const m of [...s.enqueued, ...s.reacknowledged]) {
      const o = await pipeline.outcome(m.traceId);
      if (o.status === 'dead-lettered') failed += 1;
      write(
        JSON.stringify({
          mailbox: s.mailbox,
          meshMessageId: m.meshMessageId,
          trackingId: m.traceId,
          messageId: o.messageId ?? null,
          status: o.status,
          stage: o.stage ?? null,
          itk3Code: o.itk3Code ?? null,
          error: o.code ?? null,
        }),
      );
    }
    for (const r of s.reports) {
      write(
        JSON.stringify({
          mailbox: s.mailbox,
          meshMessageId: r.meshMessageId,
          trackingId: r.traceId,
          status: 'mesh-report',
          error: r.statusCode ?? null,
        }),
      );
    }
    for (const r of s.refused) {
      write(
        JSON.stringify({
          mailbox: s.mailbox,
          meshMessageId: r.meshMessageId,
          status: 'left-in-mesh',
          error: r.reason,
        }),
      );
    }
    if (s.stopped) {
      if (s.stopped.reason === 'transient-failure') failed += 1;
      write(
        JSON.stringify({
          mailbox: s.mailbox,
          status: 'pass-stopped',
          error: s.stopped.reason,
          detail: s.stopped.detail ?? null,
        }),
      );
    }
  }
  return failed === 0 ? 0 : 1;
}

/**
 * `serve --mesh`: poll every gateway mailbox each `pollIntervalSeconds`, then drain. A failing pass
 * (MESH unreachable, credentials refused) is reported on stderr and the next pass tries again.
 * Returns a stop function that waits for the pass in progress.
 */
export function startMeshPolling(
  pipeline: EmbeddedPipeline,
  config: LoadedConfig,
  clients: Map<string, MeshClient>,
  err: Write,
): { gateway: MeshGateway; stop: () => Promise<void> } {
  const mesh = requireMesh(config);
  const gateway = attachMesh(pipeline, clients);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let pass: Promise<void> = Promise.resolve();
  const run = async () => {
    try {
      const summaries = await gateway.poll();
      for (const s of summaries) {
        if (s.stopped?.reason === 'transient-failure')
          err(`mesh: pass over ${s.mailbox} stopped: ${s.stopped.detail ?? 'MESH unavailable'}`);
      }
      await pipeline.drain();
    } catch (error) {
      err(`mesh: poll failed: ${(error as Error).message}`);
    }
    if (!stopped) timer = setTimeout(() => (pass = run()), mesh.pollIntervalSeconds * 1000);
  };
  pass = run();
  return {
    gateway,
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await pass;
      gateway.close();
    },
  };
}
