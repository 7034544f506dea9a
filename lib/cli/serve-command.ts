/**
 * `itk3 serve` on the command line: its options checked (every bad value a usage error before
 * anything starts), then the HTTP front door (serve.ts), optionally MESH polling and the operator
 * console, until SIGINT/SIGTERM.
 */
import { resolve } from 'node:path';
import { readKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import { loadConfigFile } from '../config/load.js';
import { generateOperatorToken, operatorTokenFromFile } from '../console/token.js';
import { UsageError } from '../errors.js';
import { gatewayClients, startMeshPolling } from './mesh.js';
import { commandLinePool, warnUnreachableTargets } from './ops.js';
import { DEFAULT_LISTENER_LIMITS, type ListenerLimits, startServer } from './serve.js';

type Write = (line: string) => void;

export interface ServeOptions {
  config?: string;
  keystore: string;
  port: string;
  out: string;
  allowedHost?: string[];
  headersTimeout?: string;
  requestTimeout?: string;
  keepAliveTimeout?: string;
  idleTimeout?: string;
  maxConnections?: string;
  maxBacklogMessages?: string;
  maxBacklogBytes?: string;
  maxInflightBytes?: string;
  maxBacklogShare?: string;
  stopTimeout: string;
  /** Worker threads for the CPU-heavy steps (default: one per core; 0 = none). */
  workers?: string;
  mesh?: boolean;
  console?: boolean;
  operatorTokenFile?: string;
}

export async function serveCommand(values: ServeOptions, write: Write): Promise<number> {
  if (!values.config) throw new UsageError('--config is required');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be 0–65535');
  const limits: Partial<ListenerLimits> = {};
  const seconds = (flag: string, value: string | undefined, key: keyof ListenerLimits) => {
    if (value === undefined) return;
    const s = Number(value);
    if (!Number.isFinite(s) || s <= 0 || s > 86_400) {
      throw new UsageError(`--${flag} must be a number of seconds above 0 (at most 86400)`);
    }
    limits[key] = Math.max(1, Math.round(s * 1000));
  };
  const count = (flag: string, value: string | undefined, key: keyof ListenerLimits) => {
    if (value === undefined) return;
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag} must be a positive integer`);
    limits[key] = n;
  };
  seconds('headers-timeout', values.headersTimeout, 'headersTimeoutMs');
  seconds('request-timeout', values.requestTimeout, 'requestTimeoutMs');
  seconds('keep-alive-timeout', values.keepAliveTimeout, 'keepAliveTimeoutMs');
  seconds('idle-timeout', values.idleTimeout, 'idleTimeoutMs');
  count('max-connections', values.maxConnections, 'maxConnections');
  count('max-backlog-messages', values.maxBacklogMessages, 'maxBacklogMessages');
  count('max-backlog-bytes', values.maxBacklogBytes, 'maxBacklogBytes');
  count('max-inflight-bytes', values.maxInflightBytes, 'maxInflightBytes');
  if (values.maxBacklogShare !== undefined) {
    const share = Number(values.maxBacklogShare);
    if (!Number.isFinite(share) || share <= 0 || share > 1) {
      throw new UsageError('--max-backlog-share must be a fraction above 0 and at most 1 (1 turns it off)');
    }
    limits.backlogShare = share;
  }
  if (
    (limits.headersTimeoutMs ?? DEFAULT_LISTENER_LIMITS.headersTimeoutMs) >
    (limits.requestTimeoutMs ?? DEFAULT_LISTENER_LIMITS.requestTimeoutMs)
  ) {
    throw new UsageError('--headers-timeout must not exceed --request-timeout');
  }
  const allowedHosts = values.allowedHost;
  for (const host of allowedHosts ?? []) {
    if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host)) {
      throw new UsageError(`--allowed-host "${host}" is not a host[:port]`);
    }
  }
  const stopTimeout = Number(values.stopTimeout);
  if (!(stopTimeout > 0 && stopTimeout <= 3600))
    throw new UsageError('--stop-timeout must be 1–3600 seconds');
  const config = loadConfigFile(values.config);
  warnUnreachableTargets(config, undefined, values.mesh);
  const tokenFile = values.operatorTokenFile;
  const operator =
    tokenFile !== undefined
      ? operatorTokenFromFile(resolve(tokenFile))
      : values.console
        ? { token: generateOperatorToken(), generated: true }
        : undefined;
  let failed: Error | undefined;
  let fail: (e: Error) => void = () => undefined;
  // The keystore is read here first, so an unreadable one is reported as it always was.
  const keys = new SoftwareKeyService(readKeystore(values.keystore));
  // --mesh: its secrets read before anything starts, so a missing one leaves no listener behind.
  const stderr = (l: string) => process.stderr.write(`${l}\n`);
  const meshClients = values.mesh ? gatewayClients(config, stderr) : undefined;
  const pool = await commandLinePool(values.workers, values.keystore, config);
  const server = await startServer({
    config,
    keys,
    ...(pool ? { pool } : {}),
    baseDir: resolve(values.out),
    port,
    limits,
    ...(allowedHosts ? { allowedHosts } : {}),
    ...(operator ? { console: { operatorToken: operator.token } } : {}),
    onFatal: (e) => fail(e),
  }).catch(async (error: unknown) => {
    // The port taken or the state file refused: no worker is left behind.
    await pool?.close({ timeoutMs: 0 });
    throw error;
  });
  // --mesh: also poll the gateway's MESH mailboxes (config "mesh") into the same pipeline.
  const meshPolling = meshClients
    ? startMeshPolling(server.pipeline, config, meshClients, stderr)
    : undefined;
  // Signal handlers first: a process manager may send SIGTERM as soon as it reads the line below.
  const stopped = new Promise<void>((done) => {
    // The MESH pass in progress ends with the pipeline's drain; a MESH call still hanging is left
    // at the bound (nothing it read was acknowledged before its enqueue was committed).
    const stopBoth = (ms: number) =>
      Promise.all([
        server.close(ms),
        meshPolling && Promise.race([meshPolling.stop(), new Promise((r) => setTimeout(r, ms))]),
      ]).then(() => done());
    const stop = () => {
      process.stderr.write(`stopping: finishing or parking work in hand (at most ${stopTimeout} s)\n`);
      void stopBoth(stopTimeout * 1000);
    };
    fail = (e) => {
      failed = e;
      process.stderr.write(`error: ${e.message}; stopped taking messages, nothing accepted is lost\n`);
      void stopBoth(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  if (server.resumed > 0) write(`resumed ${server.resumed} queued messages the previous run left unfinished`);
  write(
    `listening on http://127.0.0.1:${server.port} — POST /messages, GET /messages/<trackingId>; Ctrl-C to stop`,
  );
  if (meshPolling) {
    write(
      `polling MESH mailboxes ${[...meshPolling.gateway.clients.keys()].join(', ')} every ${config.doc.mesh?.pollIntervalSeconds} s`,
    );
  }
  if (operator) {
    write(`operator console: http://127.0.0.1:${server.port}/console/`);
    // The token is shown here once, or said where it is kept; it is never logged again.
    if (tokenFile !== undefined) {
      process.stderr.write(
        `operator token ${operator.generated ? 'generated into' : 'read from'} ${resolve(tokenFile)}\n`,
      );
    } else {
      process.stderr.write(`operator token (shown once, kept nowhere): ${operator.token}\n`);
    }
  }
  await stopped;
  await pool?.close({ timeoutMs: 0 });
  // A handler abandoned at the deadline may still hold a timer or a crypto job; its work was never
  // committed, so exiting now loses nothing and keeps the stop bound.
  setTimeout(() => process.exit(), 200).unref();
  return failed ? 1 : 0;
}
