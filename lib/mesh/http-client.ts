/**
 * The MESH HTTP adapter: a small typed client over node:http/node:https (docs/MESH.md says why this
 * and not `nhs-mesh-client`). Each request carries a fresh NHSMESH token; non-loopback hosts are
 * reached only over mutual TLS (lib/mesh/options.ts refuses anything else before we get here).
 *
 * Nothing here logs. Errors carry status codes, mailbox and message ids, never a header or a body.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { arch, platform, release } from 'node:os';
import { gzipSync } from 'node:zlib';
import { MeshTokenSource } from './auth.js';
import type {
  MeshClient,
  MeshDownloadedMessage,
  MeshInboxPage,
  MeshReportStatus,
  MeshRichEntry,
  MeshSendOptions,
  MeshTracking,
} from './client.js';
import { MeshAuthError, MeshError, MeshTooLargeError } from './errors.js';
import { gunzipBounded, looksGzipped, readBounded } from './gunzip.js';
import { type MeshConnection, meshConnection } from './options.js';

const MESH_V2 = 'application/vnd.mesh.v2+json';
const CLIENT_VERSION = 'itk3-secure-pipeline==0.1.0';
/** JSON answers (lists, tracking, send receipts) are small; anything bigger is not MESH. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
/** A sane bound on chunk counts announced by the server. */
const MAX_CHUNKS = 10_000;
/** MESH message ids: digits, underscore, letters (e.g. 20200601122152994285_D59900). */
const MESSAGE_ID = /^[A-Za-z0-9_-]{1,100}$/;

interface Sent {
  status: number;
  headers: IncomingMessage['headers'];
  response: IncomingMessage;
}

export class HttpMeshClient implements MeshClient {
  readonly mailbox: string;
  readonly #conn: MeshConnection;
  readonly #tokens: MeshTokenSource;
  readonly #agent: HttpAgent | HttpsAgent;

  constructor(options: unknown, deps: { now?: () => number } = {}) {
    this.#conn = meshConnection(options);
    this.mailbox = this.#conn.mailbox;
    this.#tokens = new MeshTokenSource(this.mailbox, this.#conn.password, this.#conn.sharedKey, deps.now);
    const tls = this.#conn.tls;
    this.#agent =
      this.#conn.url.protocol === 'https:'
        ? new HttpsAgent({
            keepAlive: true,
            minVersion: 'TLSv1.2',
            ...(tls ? { cert: tls.cert, key: tls.key.reveal(), ...(tls.ca ? { ca: tls.ca } : {}) } : {}),
          })
        : new HttpAgent({ keepAlive: true });
  }

  /** Server minus local clock, as last observed (for diagnostics). */
  get clockOffsetMs(): number {
    return this.#tokens.offsetMs;
  }

  async handshake(): Promise<void> {
    const sent = await this.#send('POST', this.#mailboxPath(), {
      headers: {
        'Mex-ClientVersion': CLIENT_VERSION,
        'Mex-OSName': platform(),
        'Mex-OSArchitecture': arch(),
        'Mex-OSVersion': release(),
        'Mex-JavaVersion': 'N/A',
      },
    });
    await this.#expectOk(sent, 'handshake');
    sent.response.resume();
  }

  async listInbox(opts: { maxResults?: number; continueFrom?: string } = {}): Promise<MeshInboxPage> {
    const query = new URLSearchParams();
    if (opts.maxResults !== undefined)
      query.set('max_results', String(Math.max(10, Math.min(500, opts.maxResults))));
    if (opts.continueFrom !== undefined) query.set('continue_from', opts.continueFrom);
    const path = `${this.#mailboxPath()}/inbox${query.size ? `?${query}` : ''}`;
    const json = await this.#json('GET', path, 'list inbox');
    const page = json as { messages?: unknown; links?: { next?: unknown }; approx_inbox_count?: unknown };
    if (
      !Array.isArray(page.messages) ||
      !page.messages.every((m) => typeof m === 'string' && MESSAGE_ID.test(m))
    ) {
      throw new MeshError('permanent', 'MESH inbox list is malformed');
    }
    return {
      messageIds: page.messages as string[],
      next: typeof page.links?.next === 'string' ? this.#continuation(page.links.next, '/inbox') : undefined,
      approxInboxCount: typeof page.approx_inbox_count === 'number' ? page.approx_inbox_count : undefined,
    };
  }

  async listInboxRich(
    opts: { maxResults?: number; continueFrom?: string; includeAcknowledged?: boolean } = {},
  ): Promise<{ messages: MeshRichEntry[]; next: string | undefined }> {
    const query = new URLSearchParams();
    if (opts.maxResults !== undefined)
      query.set('max_results', String(Math.max(1, Math.min(2000, opts.maxResults))));
    if (opts.continueFrom !== undefined) query.set('continue_from', opts.continueFrom);
    const path = `${this.#mailboxPath()}/inbox/rich${query.size ? `?${query}` : ''}`;
    const json = (await this.#json('GET', path, 'rich inbox')) as {
      messages?: unknown;
      links?: { next?: unknown };
    };
    if (!Array.isArray(json.messages)) throw new MeshError('permanent', 'MESH rich inbox is malformed');
    const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
    const messages: MeshRichEntry[] = [];
    for (const raw of json.messages as Record<string, unknown>[]) {
      const messageId = str(raw?.message_id);
      if (!messageId || !MESSAGE_ID.test(messageId))
        throw new MeshError('permanent', 'MESH rich inbox is malformed');
      const status = str(raw.status)?.toLowerCase() ?? 'unknown';
      if (!opts.includeAcknowledged && status !== 'accepted') continue;
      messages.push({
        messageId,
        messageType: (str(raw.message_type) ?? 'DATA').toUpperCase(),
        from: str(raw.sender),
        to: str(raw.recipient),
        workflowId: str(raw.workflow_id),
        localId: str(raw.local_id),
        totalChunks: typeof raw.total_chunks === 'number' ? raw.total_chunks : 1,
        status,
        statusCode: str(raw.status_code),
        sentDate: str(raw.sent_date),
      });
    }
    const next =
      typeof json.links?.next === 'string' ? this.#continuation(json.links.next, '/inbox/rich') : undefined;
    return { messages, next };
  }

  async download(messageId: string, opts: { maxBytes?: number } = {}): Promise<MeshDownloadedMessage> {
    const id = checkedMessageId(messageId);
    const maxBytes = Math.min(opts.maxBytes ?? this.#conn.maxMessageBytes, this.#conn.maxMessageBytes);
    const what = `MESH message ${id}`;
    const first = await this.#send('GET', `${this.#mailboxPath()}/inbox/${id}`, {
      headers: { 'Accept-Encoding': 'gzip' },
    });
    await this.#expectOk(first, `download ${id}`);
    const h = first.headers;
    let totalChunks: number;
    try {
      const [chunk1, of] = parseChunkRange(header(h, 'mex-chunk-range') ?? '1:1', id);
      if (chunk1 !== 1) throw new MeshError('permanent', `${what}: first chunk announced as ${chunk1}`);
      totalChunks = of;
    } catch (error) {
      first.response.destroy();
      throw error;
    }

    const parts: Buffer[] = [];
    let total = 0;
    let transportGzip = false;
    const take = async (sent: Sent, chunk: number) => {
      const remaining = maxBytes - total;
      const declared = Number(header(sent.headers, 'content-length') ?? Number.NaN);
      // Before: a declared length over the budget is refused without reading the body.
      if (Number.isFinite(declared) && declared > remaining) {
        sent.response.destroy();
        throw new MeshTooLargeError(
          `${what} chunk ${chunk} is ${declared} bytes, over the ${maxBytes}-byte limit`,
        );
      }
      const gzipped = (header(sent.headers, 'content-encoding') ?? '').toLowerCase() === 'gzip';
      transportGzip ||= gzipped;
      // During: bytes (and decompressed bytes) are counted as they arrive.
      const bytes = gzipped
        ? await gunzipBounded(sent.response, { maxInputBytes: remaining, maxOutputBytes: remaining }, what)
        : await readBounded(sent.response, remaining, what);
      total += bytes.byteLength;
      parts.push(bytes);
    };
    await take(first, 1);
    for (let chunk = 2; chunk <= totalChunks; chunk += 1) {
      const sent = await this.#send('GET', `${this.#mailboxPath()}/inbox/${id}/${chunk}`, {
        headers: { 'Accept-Encoding': 'gzip' },
      });
      await this.#expectOk(sent, `download ${id} chunk ${chunk}`);
      const range = header(sent.headers, 'mex-chunk-range') ?? `${chunk}:${totalChunks}`;
      if (range.trim() !== `${chunk}:${totalChunks}`) {
        sent.response.destroy();
        throw new MeshError(
          'permanent',
          `${what}: expected chunk ${chunk}:${totalChunks}, got another range`,
        );
      }
      await take(sent, chunk);
    }
    let body: Buffer = Buffer.concat(parts, total);
    // A sender may gzip the content itself and say so with Mex-Content-Compressed (no Content-Encoding).
    const senderGzip =
      !transportGzip && /^(y|true)$/i.test(header(h, 'mex-content-compressed') ?? '') && looksGzipped(body);
    if (senderGzip)
      body = await gunzipBounded(body, { maxInputBytes: maxBytes, maxOutputBytes: maxBytes }, what);

    const messageType = (header(h, 'mex-messagetype') ?? 'DATA').toUpperCase();
    const report: MeshReportStatus | undefined =
      messageType === 'REPORT'
        ? {
            linkedMessageId: header(h, 'mex-linkedmsgid'),
            statusCode: header(h, 'mex-statuscode'),
            statusEvent: header(h, 'mex-statusevent'),
            statusDescription: header(h, 'mex-statusdescription'),
            statusSuccess: header(h, 'mex-statussuccess'),
          }
        : undefined;
    return {
      messageId: id,
      messageType,
      from: header(h, 'mex-from'),
      to: header(h, 'mex-to'),
      workflowId: header(h, 'mex-workflowid'),
      localId: header(h, 'mex-localid'),
      subject: header(h, 'mex-subject'),
      fileName: header(h, 'mex-filename'),
      contentType: header(h, 'mex-content-type') ?? header(h, 'content-type'),
      totalChunks,
      body,
      wasCompressed: transportGzip || senderGzip,
      report,
    };
  }

  async acknowledge(messageId: string): Promise<void> {
    const id = checkedMessageId(messageId);
    const sent = await this.#send('PUT', `${this.#mailboxPath()}/inbox/${id}/status/acknowledged`, {});
    await this.#expectOk(sent, `acknowledge ${id}`);
    sent.response.resume();
  }

  async send(to: string, body: Uint8Array, opts: MeshSendOptions): Promise<{ messageId: string }> {
    if (!/^[A-Za-z0-9]{3,20}$/.test(to)) throw new MeshError('config', 'recipient mailbox id is malformed');
    if (!/^[A-Za-z0-9_.-]{1,100}$/.test(opts.workflowId))
      throw new MeshError('config', 'workflow id is malformed');
    const chunkSize = opts.chunkSizeBytes ?? this.#conn.chunkSizeBytes;
    const compress = opts.compress ?? this.#conn.compressSent;
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < body.byteLength || chunks.length === 0; at += chunkSize) {
      chunks.push(body.subarray(at, Math.min(at + chunkSize, body.byteLength)));
    }
    const totalChunks = chunks.length;
    const encode = (c: Uint8Array) => (compress ? gzipSync(c) : c);
    const first: Record<string, string> = {
      'Content-Type': totalChunks === 1 && opts.contentType ? opts.contentType : 'application/octet-stream',
      'Mex-To': to.toUpperCase(),
      'Mex-WorkflowID': opts.workflowId,
      'Mex-Chunk-Range': `1:${totalChunks}`,
      ...(opts.localId ? { 'Mex-LocalID': opts.localId } : {}),
      ...(opts.subject ? { 'Mex-Subject': opts.subject } : {}),
      ...(opts.fileName ? { 'Mex-FileName': opts.fileName } : {}),
      ...(opts.contentType ? { 'Mex-Content-Type': opts.contentType } : {}),
      ...(compress ? { 'Content-Encoding': 'gzip', 'Mex-Content-Compressed': 'Y' } : {}),
    };
    const receipt = (await this.#json('POST', `${this.#mailboxPath()}/outbox`, 'send', {
      headers: first,
      body: encode(chunks[0]!),
    })) as { message_id?: unknown };
    if (typeof receipt.message_id !== 'string' || !MESSAGE_ID.test(receipt.message_id)) {
      throw new MeshError('permanent', 'MESH send receipt has no message id');
    }
    const messageId = receipt.message_id;
    for (let chunk = 2; chunk <= totalChunks; chunk += 1) {
      const sent = await this.#send('POST', `${this.#mailboxPath()}/outbox/${messageId}/${chunk}`, {
        headers: {
          'Content-Type': 'application/octet-stream',
          'Mex-Chunk-Range': `${chunk}:${totalChunks}`,
          ...(compress ? { 'Content-Encoding': 'gzip' } : {}),
        },
        body: encode(chunks[chunk - 1]!),
      });
      await this.#expectOk(sent, `send ${messageId} chunk ${chunk}`);
      sent.response.resume();
    }
    return { messageId };
  }

  async track(messageId: string): Promise<MeshTracking> {
    const id = checkedMessageId(messageId);
    const t = (await this.#json(
      'GET',
      `${this.#mailboxPath()}/outbox/tracking?messageID=${encodeURIComponent(id)}`,
      `track ${id}`,
    )) as Record<string, unknown>;
    const str = (k: string) => (typeof t[k] === 'string' && t[k] !== '' ? (t[k] as string) : undefined);
    return {
      messageId: str('message_id') ?? id,
      localId: str('local_id'),
      recipient: str('recipient'),
      workflowId: str('workflow_id'),
      status: str('status'),
      statusCode: str('status_code'),
      statusDescription: str('status_description'),
      statusSuccess: typeof t.status_success === 'boolean' ? t.status_success : undefined,
    };
  }

  close(): void {
    this.#agent.destroy();
  }

  #mailboxPath(): string {
    return `/messageexchange/${this.mailbox}`;
  }

  /** `links.next` is a path on the same server; only its `continue_from` is kept. */
  #continuation(next: string, list: '/inbox' | '/inbox/rich'): string | undefined {
    let url: URL;
    try {
      url = new URL(next, this.#conn.url);
    } catch {
      return undefined;
    }
    if (url.origin !== this.#conn.url.origin || url.pathname !== `${this.#mailboxPath()}${list}`) {
      throw new MeshError('permanent', 'MESH inbox continuation points elsewhere');
    }
    return url.searchParams.get('continue_from') ?? undefined;
  }

  async #json(
    method: string,
    path: string,
    what: string,
    init: { headers?: Record<string, string>; body?: Uint8Array } = {},
  ): Promise<unknown> {
    const sent = await this.#send(method, path, init);
    await this.#expectOk(sent, what);
    const text = (await readBounded(sent.response, MAX_JSON_BYTES, `MESH ${what} answer`)).toString('utf8');
    try {
      return JSON.parse(text);
    } catch {
      throw new MeshError('permanent', `MESH ${what} answer is not JSON`);
    }
  }

  /** Map a non-2xx answer to a typed error (the body is drained, never quoted). */
  async #expectOk(sent: Sent, what: string): Promise<void> {
    if (sent.status >= 200 && sent.status < 300) return;
    sent.response.destroy(); // an error body is never read: it could be large, and it is not quoted
    const status = sent.status;
    if (status === 401 || status === 403) {
      const skew = this.#tokens.skewMinutes;
      throw new MeshAuthError(
        this.mailbox,
        status,
        skew >= 5 ? `the local clock is ${skew} minutes off MESH's` : undefined,
      );
    }
    const transient = status === 408 || status === 429 || status >= 500;
    throw new MeshError(transient ? 'transient' : 'permanent', `MESH ${what} failed: HTTP ${status}`, {
      status,
    });
  }

  /**
   * One request with a fresh token. A kept-alive socket the server closed while idle (a restart)
   * fails on first use; GET and PUT (idempotent in MESH) are then sent once more on a new socket.
   */
  async #send(
    method: string,
    path: string,
    init: { headers?: Record<string, string>; body?: Uint8Array },
  ): Promise<Sent> {
    const unwrap = (error: unknown) => (error instanceof StaleSocketError ? error.meshError : error);
    try {
      return await this.#sendOnce(method, path, init);
    } catch (error) {
      if (!(error instanceof StaleSocketError) || (method !== 'GET' && method !== 'PUT')) throw unwrap(error);
    }
    try {
      return await this.#sendOnce(method, path, init);
    } catch (error) {
      throw unwrap(error);
    }
  }

  #sendOnce(
    method: string,
    path: string,
    init: { headers?: Record<string, string>; body?: Uint8Array },
  ): Promise<Sent> {
    const url = new URL(path, this.#conn.url);
    const authorization = this.#tokens.next();
    const headers: Record<string, string | number> = {
      Accept: MESH_V2,
      'User-Agent': CLIENT_VERSION,
      ...init.headers,
      Authorization: authorization,
    };
    if (init.body) headers['Content-Length'] = init.body.byteLength;
    else if (method === 'POST' || method === 'PUT') headers['Content-Length'] = 0;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Sent>((resolve, reject) => {
      let req: ReturnType<typeof send>;
      try {
        req = send(
          url,
          { method, headers, agent: this.#agent, timeout: this.#conn.timeoutMs },
          (response) => {
            this.#tokens.observeServerDate(header(response.headers, 'date'));
            // A stalled body after the headers is a timeout too.
            response.setTimeout(this.#conn.timeoutMs, () =>
              response.destroy(networkError(method, url, 'ETIMEDOUT')),
            );
            resolve({ status: response.statusCode ?? 0, headers: response.headers, response });
          },
        );
      } catch (error) {
        // The TLS context is built here: a certificate that does not match its key fails synchronously.
        reject(classifyNetworkError(method, url, error as Error));
        return;
      }
      req.on('timeout', () => req.destroy(networkError(method, url, 'ETIMEDOUT')));
      req.on('error', (error) => {
        const mapped = error instanceof MeshError ? error : classifyNetworkError(method, url, error);
        const code = (error as { code?: unknown }).code;
        reject(req.reusedSocket && code === 'ECONNRESET' ? new StaleSocketError(mapped) : mapped);
      });
      req.end(init.body);
    });
  }
}

/** A reused keep-alive socket was reset before any answer: safe to resend an idempotent request. */
class StaleSocketError extends Error {
  constructor(readonly meshError: MeshError) {
    super(meshError.message);
  }
}

function header(headers: IncomingMessage['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function parseChunkRange(value: string, id: string): [number, number] {
  const match = /^(\d{1,5}):(\d{1,5})$/.exec(value.trim());
  const n = Number(match?.[1]);
  const of = Number(match?.[2]);
  // REPORT messages carry no data chunk: MESH announces them as 1:0.
  if (match && n === 1 && of === 0) return [1, 0];
  if (!match || n < 1 || of < n || of > MAX_CHUNKS) {
    throw new MeshError('permanent', `MESH message ${id}: malformed Mex-Chunk-Range`);
  }
  return [n, of];
}

function checkedMessageId(messageId: string): string {
  if (!MESSAGE_ID.test(messageId)) throw new MeshError('config', 'MESH message id is malformed');
  return messageId;
}

function networkError(method: string, url: URL, code: string): MeshError {
  return new MeshError('transient', `MESH ${method} ${url.host} failed: ${code}`);
}

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
]);

/** Network failures: transient unless TLS says the peer or our certificate is wrong. */
function classifyNetworkError(method: string, url: URL, error: Error): MeshError {
  const code = String((error as { code?: unknown }).code ?? 'UNKNOWN');
  if (TRANSIENT_CODES.has(code) || error.message === 'socket hang up') {
    return new MeshError('transient', `MESH ${method} ${url.host} failed: ${code}`, { cause: error });
  }
  return new MeshError(
    'permanent',
    `MESH ${method} ${url.host} failed: ${code} (check the TLS certificate, key and CA)`,
    {
      cause: error,
    },
  );
}
