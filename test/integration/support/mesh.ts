/**
 * NHS England's MESH sandbox and Python mesh-client for the integration suites.
 *
 * The suite runs when `ITK3_MESH_SANDBOX` names a running sandbox (scripts/mesh-sandbox.sh start,
 * then `export ITK3_MESH_SANDBOX=http://127.0.0.1:47701`); otherwise it is skipped with the reason
 * printed. The partner (the GP system at the other end) is NHS England's own `mesh-client`, run
 * from the venv the script installs, through scripts/mesh_partner.py.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { MESH_DEMO_MAILBOXES, meshWorldConfig } from '../../../lib/cli/demo-mesh.js';
import { loadConfig } from '../../../lib/config/load.js';
import { projectRoot } from '../../../lib/itk3/samples.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';

export const MESH_SANDBOX = process.env.ITK3_MESH_SANDBOX || undefined;
/** The sandbox's environment secret (scripts/mesh-sandbox.sh uses the same default). */
export const MESH_SHARED_KEY = process.env.ITK3_MESH_SHARED_KEY || 'TestKey';
/** Canned sandbox mailboxes (mesh_sandbox/store/data/mailboxes.jsonl), all with password `password`. */
export const MAILBOX = { gp: 'X26ABC1', gateway: 'X26ABC2' } as const;
export const MAILBOX_PASSWORD = 'password';

const ROOT = projectRoot();
const PYTHON = join(ROOT, '.mesh/venv/bin/python');
const PARTNER = join(ROOT, 'scripts/mesh_partner.py');
const SCRIPT = join(ROOT, 'scripts/mesh-sandbox.sh');

/** `describe` when the sandbox is configured, else a skipped suite with the reason printed. */
export function describeWithMeshSandbox(suite: string, body: (url: string) => void): void {
  if (!MESH_SANDBOX) {
    console.warn(
      `SKIPPED suite "${suite}": ITK3_MESH_SANDBOX is not set (start it with scripts/mesh-sandbox.sh start and export ITK3_MESH_SANDBOX=http://127.0.0.1:47701)`,
    );
    describe.skip(suite, () => {
      it('needs ITK3_MESH_SANDBOX', () => {});
    });
    return;
  }
  if (!existsSync(PYTHON)) {
    throw new Error(`ITK3_MESH_SANDBOX is set but ${PYTHON} is missing: run scripts/mesh-sandbox.sh start`);
  }
  describe(suite, () => {
    // Suites share the sandbox's three mailboxes and stop and restart it: one at a time.
    beforeAll(acquireSandboxLock, SANDBOX_LOCK_WAIT_MS + 10_000);
    afterAll(releaseSandboxLock);
    body(MESH_SANDBOX);
  });
}

const LOCK_DIR = join(ROOT, '.mesh/suite.lock');

/**
 * How long a suite waits for the sandbox: the longest holder is the deployed-stack MESH suite (a
 * scheduled poll on ministack, then `cdk destroy`, about 3 minutes).
 */
const SANDBOX_LOCK_WAIT_MS = 360_000;

/** A cross-process lock (mkdir is atomic); a lock whose holder died is taken over. */
export async function acquireSandboxLock(): Promise<void> {
  const deadline = Date.now() + SANDBOX_LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(LOCK_DIR);
      writeFileSync(join(LOCK_DIR, 'pid'), String(process.pid));
      return;
    } catch {
      const holder = Number(readFileSyncSafe(join(LOCK_DIR, 'pid')));
      if (holder && !alive(holder)) rmSync(LOCK_DIR, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`the MESH sandbox is held by another suite (${LOCK_DIR})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export function releaseSandboxLock(): void {
  if (readFileSyncSafe(join(LOCK_DIR, 'pid')) === String(process.pid))
    rmSync(LOCK_DIR, { recursive: true, force: true });
}

function readFileSyncSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Whether a process with this id is still running (signal 0 checks without signalling). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface PartnerMessage {
  message_id: string;
  sender: string;
  workflow_id: string;
  local_id: string | null;
  body: Buffer;
}

function partner(request: Record<string, unknown>): unknown {
  const result = spawnSync(PYTHON, [PARTNER], {
    input: JSON.stringify({
      url: MESH_SANDBOX,
      password: MAILBOX_PASSWORD,
      shared_key: MESH_SHARED_KEY,
      ...request,
    }),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  if (result.status !== 0) throw new Error(`mesh-client partner failed: ${result.stderr.slice(-2000)}`);
  return JSON.parse(result.stdout);
}

/** NHS England's mesh-client sends `body` from `mailbox` (optionally chunked and compressed). */
export function partnerSend(opts: {
  mailbox: string;
  to: string;
  body: Uint8Array;
  workflowId: string;
  localId?: string;
  subject?: string;
  filename?: string;
  contentType?: string;
  maxChunkSize?: number;
  compress?: boolean;
}): string {
  const out = partner({
    op: 'send',
    mailbox: opts.mailbox,
    to: opts.to,
    workflow_id: opts.workflowId,
    body_b64: Buffer.from(opts.body).toString('base64'),
    local_id: opts.localId,
    subject: opts.subject,
    filename: opts.filename,
    content_type: opts.contentType,
    max_chunk_size: opts.maxChunkSize,
    compress: opts.compress ?? false,
  }) as { message_id: string };
  return out.message_id;
}

/** NHS England's mesh-client lists, downloads and acknowledges everything in `mailbox`. */
export function partnerReceive(mailbox: string): PartnerMessage[] {
  const out = partner({ op: 'receive', mailbox }) as {
    messages: (Omit<PartnerMessage, 'body'> & { body_b64: string })[];
  };
  return out.messages.map(({ body_b64, ...m }) => ({ ...m, body: Buffer.from(body_b64, 'base64') }));
}

/** Empty a mailbox through the sandbox's admin API (testing only; no credentials). */
export async function resetMailbox(mailbox: string): Promise<void> {
  const response = await fetch(`${MESH_SANDBOX}/messageexchange/admin/reset/${mailbox}`, {
    method: 'DELETE',
  });
  if (!response.ok) throw new Error(`sandbox reset of ${mailbox} failed: HTTP ${response.status}`);
}

/** Put a REPORT (e.g. a non-delivery report) into a mailbox through the admin API. */
export async function injectReport(report: {
  mailbox: string;
  code: string;
  description: string;
  workflowId: string;
  localId?: string;
  linkedMessageId?: string;
}): Promise<string> {
  const response = await fetch(`${MESH_SANDBOX}/messageexchange/admin/report`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      mailbox_id: report.mailbox,
      code: report.code,
      description: report.description,
      workflow_id: report.workflowId,
      local_id: report.localId,
      linked_message_id: report.linkedMessageId,
    }),
  });
  if (!response.ok) throw new Error(`sandbox report injection failed: HTTP ${response.status}`);
  return ((await response.json()) as { message_id: string }).message_id;
}

/** Stop or start the sandbox process (scripts/mesh-sandbox.sh), on the port the suite uses. */
export function sandboxScript(action: 'stop' | 'start'): void {
  const port = new URL(MESH_SANDBOX!).port || '47701';
  execFileSync('bash', [SCRIPT, action], {
    env: { ...process.env, ITK3_MESH_PORT: port, ITK3_MESH_SHARED_KEY: MESH_SHARED_KEY },
    stdio: ['ignore', 'ignore', 'inherit'],
    timeout: 90_000,
  });
}

/**
 * The world on the sandbox, on disk for a real `itk3` process: GP0001 sends from X26ABC1 (signed
 * responses), the gateway polls X26ABC2, A83627 receives in X26ABC3 (lib/cli/demo-mesh.ts), the
 * shared key and the mailbox password in 0600 files.
 */
export function writeMeshWorld(
  world: DemoWorld,
  dir: string,
  url: string,
  pollIntervalSeconds = 1,
): { config: string; keystore: string; mailboxes: typeof MESH_DEMO_MAILBOXES } {
  mkdirSync(dir, { recursive: true });
  const sharedKeyFile = join(dir, 'mesh-shared-key');
  const passwordFile = join(dir, 'gateway-mailbox-password');
  writeFileSync(sharedKeyFile, `${MESH_SHARED_KEY}\n`, { mode: 0o600 });
  writeFileSync(passwordFile, `${MAILBOX_PASSWORD}\n`, { mode: 0o600 });
  const doc = meshWorldConfig(world, { url, sharedKeyFile, passwordFile, pollIntervalSeconds });
  loadConfig(doc);
  const config = join(dir, 'config.json');
  const keystore = join(dir, 'keystore.json');
  writeFileSync(config, JSON.stringify(doc));
  writeKeystore(keystore, world.keystore);
  return { config, keystore, mailboxes: MESH_DEMO_MAILBOXES };
}
