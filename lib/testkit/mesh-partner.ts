/**
 * NHS England's Python mesh-client as the other end of a MESH exchange (the GP system), run through
 * scripts/mesh_partner.py with the venv's python. `itk3 demo --mesh` and the MESH integration
 * suites both talk to the sandbox through this one piece.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../itk3/index.js';

/** How the partner reaches a sandbox: the venv's python, the sandbox, its mailbox password and shared key. */
export interface MeshPartnerAccess {
  python: string;
  url: string;
  password: string;
  sharedKey: string;
}

/** One message the partner downloaded (and acknowledged), as scripts/mesh_partner.py answers it. */
export interface MeshPartnerMessage {
  message_id: string;
  sender: string;
  workflow_id: string;
  local_id: string | null;
  body: Buffer;
}

export interface MeshPartnerSend {
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
}

function callPartner(access: MeshPartnerAccess, request: Record<string, unknown>): unknown {
  const script = join(projectRoot(), 'scripts/mesh_partner.py');
  const result = spawnSync(access.python, [script], {
    input: JSON.stringify({
      url: access.url,
      password: access.password,
      shared_key: access.sharedKey,
      ...request,
    }),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  if (result.status !== 0) {
    // The exception line only: the request (with the password and shared key) never goes to stderr.
    const reason = (result.stderr || String(result.error)).trim().split('\n').at(-1);
    throw new Error(`mesh-client ${String(request.op)} failed: ${reason}`);
  }
  return JSON.parse(result.stdout);
}

/** The partner sends `body` from `mailbox` (optionally chunked and compressed); the MESH message id. */
export function meshPartnerSend(access: MeshPartnerAccess, send: MeshPartnerSend): string {
  const answer = callPartner(access, {
    op: 'send',
    mailbox: send.mailbox,
    to: send.to,
    workflow_id: send.workflowId,
    body_b64: Buffer.from(send.body).toString('base64'),
    local_id: send.localId,
    subject: send.subject,
    filename: send.filename,
    content_type: send.contentType,
    max_chunk_size: send.maxChunkSize,
    compress: send.compress ?? false,
  }) as { message_id: string };
  return answer.message_id;
}

/** The partner lists, downloads and acknowledges everything waiting in `mailbox`. */
export function meshPartnerReceive(access: MeshPartnerAccess, mailbox: string): MeshPartnerMessage[] {
  const answer = callPartner(access, { op: 'receive', mailbox }) as {
    messages: (Omit<MeshPartnerMessage, 'body'> & { body_b64: string })[];
  };
  return answer.messages.map(({ body_b64, ...m }) => ({ ...m, body: Buffer.from(body_b64, 'base64') }));
}
