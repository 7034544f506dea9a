/**
 * The MESH port: what the poller (and, later, the outbound MESH target and the AWS poller) need
 * from a MESH mailbox. One adapter speaks HTTP to MESH (lib/mesh/http-client.ts); tests may supply
 * their own. Every method throws {@link import('./errors.js').MeshError} with a `kind`.
 */

/** One message's metadata, from its download headers (or the rich inbox). */
interface MeshMessageMeta {
  messageId: string;
  /** `DATA`, or `REPORT` for MESH's own non-delivery and error reports. */
  messageType: string;
  from: string | undefined;
  to: string | undefined;
  workflowId: string | undefined;
  localId: string | undefined;
  subject: string | undefined;
  fileName: string | undefined;
  /** The sender's declared content type (`Mex-Content-Type`, else the response's Content-Type). */
  contentType: string | undefined;
  /** Chunks the message was sent in (`Mex-Chunk-Range 1:n`). */
  totalChunks: number;
}

/** For REPORT messages: what MESH says happened to a message (ITK3.md §5.3). */
export interface MeshReportStatus {
  linkedMessageId: string | undefined;
  statusCode: string | undefined;
  statusEvent: string | undefined;
  statusDescription: string | undefined;
  statusSuccess: string | undefined;
}

export interface MeshDownloadedMessage extends MeshMessageMeta {
  /** The message bytes as the sender sent them: chunks joined, gzip removed. */
  body: Uint8Array;
  /** The body travelled gzip-compressed (Content-Encoding or Mex-Content-Compressed). */
  wasCompressed: boolean;
  report: MeshReportStatus | undefined;
}

export interface MeshInboxPage {
  messageIds: string[];
  /** Opaque continuation for the next page, absent on the last page. */
  next: string | undefined;
  approxInboxCount: number | undefined;
}

/** One rich-inbox entry: metadata without downloading (what MESH's `/inbox/rich` offers). */
export interface MeshRichEntry extends Omit<MeshMessageMeta, 'subject' | 'fileName' | 'contentType'> {
  /** `accepted` (waiting for download) or `acknowledged`. */
  status: string;
  /** For REPORTs: MESH's status code (ITK3.md §5.3). */
  statusCode: string | undefined;
  sentDate: string | undefined;
}

export interface MeshSendOptions {
  workflowId: string;
  localId?: string;
  subject?: string;
  fileName?: string;
  contentType?: string;
  /** Override the connection's `compressSent`. */
  compress?: boolean;
  /** Override the connection's `chunkSizeBytes`. */
  chunkSizeBytes?: number;
}

export interface MeshTracking {
  messageId: string;
  localId: string | undefined;
  recipient: string | undefined;
  workflowId: string | undefined;
  status: string | undefined;
  statusCode: string | undefined;
  statusDescription: string | undefined;
  statusSuccess: boolean | undefined;
}

export interface MeshClient {
  /** The mailbox this client acts for (upper case). */
  readonly mailbox: string;
  /** Authenticate and announce the client; call once per session. */
  handshake(): Promise<void>;
  /** One page of message ids awaiting download (at most `maxResults`, MESH caps at 500). */
  listInbox(opts?: { maxResults?: number; continueFrom?: string }): Promise<MeshInboxPage>;
  /**
   * Metadata of recent messages (`/inbox/rich`; the sandbox and MESH's v2 API), waiting ones only
   * unless `includeAcknowledged`. For routing or dashboards; the poller relies on `listInbox`.
   */
  listInboxRich(opts?: {
    maxResults?: number;
    continueFrom?: string;
    includeAcknowledged?: boolean;
  }): Promise<{
    messages: MeshRichEntry[];
    next: string | undefined;
  }>;
  /**
   * Download a message: all chunks, decompressed, within `maxBytes` (default: the connection's
   * `maxMessageBytes`) checked before and during download and decompression.
   */
  download(messageId: string, opts?: { maxBytes?: number }): Promise<MeshDownloadedMessage>;
  /** Remove a message from the inbox. Idempotent on the MESH side. */
  acknowledge(messageId: string): Promise<void>;
  /** Send bytes to a mailbox (chunked above the chunk size). Returns the MESH message id. */
  send(to: string, body: Uint8Array, opts: MeshSendOptions): Promise<{ messageId: string }>;
  /** Where a sent message stands. */
  track(messageId: string): Promise<MeshTracking>;
  /** Release sockets. */
  close(): void;
}
