/**
 * NHS England's MESH sandbox and Python mesh-client for the integration suites.
 *
 * The suite runs when `ITK3_MESH_SANDBOX` names a running sandbox (scripts/mesh-sandbox.sh start,
 * then `export ITK3_MESH_SANDBOX=http://127.0.0.1:47701`); otherwise it is skipped with the reason
 * printed. The partner (the GP system at the other end) is NHS England's own `mesh-client`, run
 * from the venv the script installs, through scripts/mesh_partner.py.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import {
  MESH_DEMO_MAILBOXES,
  resetSandboxMailbox,
  writeMeshWorld as writeDemoMeshWorld,
} from '../../../lib/cli/demo-mesh.js';
import { projectRoot } from '../../../lib/itk3/samples.js';
import {
  type MeshPartnerAccess,
  type MeshPartnerMessage,
  type MeshPartnerSend,
  meshPartnerReceive,
  meshPartnerSend,
} from '../../../lib/testkit/mesh-partner.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';

export const MESH_SANDBOX = process.env.ITK3_MESH_SANDBOX || undefined;
/** The sandbox's environment secret (scripts/mesh-sandbox.sh uses the same default). */
export const MESH_SHARED_KEY = process.env.ITK3_MESH_SHARED_KEY || 'TestKey';
/** Canned sandbox mailboxes (mesh_sandbox/store/data/mailboxes.jsonl), all with password `password`. */
export const MAILBOX = { gp: 'X26ABC1', gateway: 'X26ABC2' } as const;
export const MAILBOX_PASSWORD = 'password';

const ROOT = projectRoot();
const PYTHON = join(ROOT, '.mesh/venv/bin/python');
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

const PARTNER_ACCESS: MeshPartnerAccess = {
  python: PYTHON,
  url: MESH_SANDBOX ?? '',
  password: MAILBOX_PASSWORD,
  sharedKey: MESH_SHARED_KEY,
};

/** NHS England's mesh-client sends `body` from `mailbox` (optionally chunked and compressed). */
export function partnerSend(send: MeshPartnerSend): string {
  return meshPartnerSend(PARTNER_ACCESS, send);
}

/** NHS England's mesh-client lists, downloads and acknowledges everything in `mailbox`. */
export function partnerReceive(mailbox: string): MeshPartnerMessage[] {
  return meshPartnerReceive(PARTNER_ACCESS, mailbox);
}

/** Empty a mailbox through the sandbox's admin API (testing only; no credentials). */
export async function resetMailbox(mailbox: string): Promise<void> {
  await resetSandboxMailbox(MESH_SANDBOX!, mailbox);
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

/** The world on the sandbox, on disk for a real `itk3` process (lib/cli/demo-mesh.ts writeMeshWorld). */
export function writeMeshWorld(
  world: DemoWorld,
  dir: string,
  url: string,
  pollIntervalSeconds = 1,
): { config: string; keystore: string; mailboxes: typeof MESH_DEMO_MAILBOXES } {
  const files = writeDemoMeshWorld(world, dir, { url, sharedKey: MESH_SHARED_KEY, pollIntervalSeconds });
  return { config: files.configFile, keystore: files.keystoreFile, mailboxes: MESH_DEMO_MAILBOXES };
}
