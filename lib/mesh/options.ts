/**
 * MESH connection options: one typed object per mailbox, validated before any request is made.
 * Kept here rather than in the pipeline configuration until MESH becomes a configured transport.
 *
 * The secrets (password, shared key, client key) are held in a non-enumerable, redacting wrapper
 * once validated, so printing, logging or JSON-serialising the options never shows them.
 */
import { isIP } from 'node:net';
import * as z from 'zod';
import { MeshConfigError } from './errors.js';

const PEM = z.string().regex(/-----BEGIN [A-Z0-9 ]+-----/, 'must be PEM text');

const MeshTlsSchema = z
  .object({
    /** Client certificate (PEM) issued by the NHS for this mailbox and environment. */
    cert: PEM,
    /** Its private key (PEM). */
    key: PEM,
    /** CA bundle (PEM) to trust for the MESH server; the system store when absent. */
    ca: PEM.optional(),
  })
  .strict();

const MeshConnectionSchema = z
  .object({
    /** Base URL, e.g. https://msg.intspineservices.nhs.uk (no path). */
    url: z.url({ protocol: /^https?$/ }),
    /** Mailbox id, e.g. X26ABC1; MESH compares it upper-cased. */
    mailbox: z
      .string()
      .regex(/^[A-Za-z0-9]{3,20}$/, 'a MESH mailbox id is letters and digits')
      .transform((m) => m.toUpperCase()),
    password: z.string().min(1),
    /** The environment-wide shared secret the HMAC is keyed with. */
    sharedKey: z.string().min(1),
    tls: MeshTlsSchema.optional(),
    /** Per-request timeout. */
    timeoutMs: z.number().int().positive().max(600_000).default(30_000),
    /** Largest message body accepted after decompression and chunk assembly (bytes). */
    maxMessageBytes: z
      .number()
      .int()
      .positive()
      .default(100 * 1024 * 1024),
    /** Send: bodies above this are split into chunks (MESH allows 100 MB per request). */
    chunkSizeBytes: z
      .number()
      .int()
      .min(1024)
      .max(100 * 1024 * 1024)
      .default(20 * 1024 * 1024),
    /** Compress sent bodies with gzip (Content-Encoding on each request, Mex-Content-Compressed). */
    compressSent: z.boolean().default(false),
  })
  .strict();

/** A secret value that never prints. `reveal()` is called only where the bytes are needed. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[redacted]';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[redacted]';
  }
}

export interface MeshConnection {
  url: URL;
  mailbox: string;
  password: Secret;
  sharedKey: Secret;
  tls: { cert: string; key: Secret; ca?: string } | undefined;
  timeoutMs: number;
  maxMessageBytes: number;
  chunkSizeBytes: number;
  compressSent: boolean;
}

/** 127.0.0.0/8, ::1 and localhost: the only hosts that may get credentials over plain HTTP. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.split('.')[0] === '127';
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * Validate options. Errors name the field and the rule, never a value. Mutual TLS is required for
 * any host but loopback: MESH authenticates the client certificate, and the password-derived token
 * must not cross a network in clear.
 */
export function meshConnection(input: unknown): MeshConnection {
  const parsed = MeshConnectionSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(options)'}: ${i.message}`);
    throw new MeshConfigError(`invalid MESH connection options: ${problems.join('; ')}`);
  }
  const o = parsed.data;
  const url = new URL(o.url);
  if (url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
    throw new MeshConfigError('invalid MESH connection options: url must be scheme://host[:port] only');
  }
  const loopback = isLoopbackHost(url.hostname);
  if (!loopback && url.protocol !== 'https:') {
    throw new MeshConfigError(
      `refusing to send MESH credentials over plain HTTP to ${url.hostname}: use https (only loopback may use http)`,
    );
  }
  if (!loopback && !o.tls) {
    throw new MeshConfigError(
      `MESH at ${url.hostname} needs mutual TLS: set tls.cert and tls.key (the NHS-issued client certificate) and tls.ca`,
    );
  }
  return {
    url,
    mailbox: o.mailbox,
    password: new Secret(o.password),
    sharedKey: new Secret(o.sharedKey),
    tls: o.tls
      ? { cert: o.tls.cert, key: new Secret(o.tls.key), ...(o.tls.ca ? { ca: o.tls.ca } : {}) }
      : undefined,
    timeoutMs: o.timeoutMs,
    maxMessageBytes: o.maxMessageBytes,
    chunkSizeBytes: o.chunkSizeBytes,
    compressSent: o.compressSent,
  };
}
