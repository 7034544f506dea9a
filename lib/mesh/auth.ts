/**
 * The MESH `Authorization` token (ITK3.md §6; MESH API specification):
 *
 *   NHSMESH <MAILBOX>:<nonce>:<nonce_count>:<timestamp>:<hash>
 *   hash = hex HMAC-SHA256(shared secret, "<MAILBOX>:<nonce>:<nonce_count>:<password>:<timestamp>")
 *
 * with an upper-case mailbox, a GUID nonce and the UTC time as yyyyMMddHHmm. A token is good for one
 * request only, so every request gets a fresh random nonce (its count is therefore 0: the count says
 * how often that nonce has been used). MESH refuses a timestamp more than 2 hours from its own clock.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { MeshClockSkewError } from './errors.js';

const MESH_AUTH_SCHEME = 'NHSMESH';
/** MESH refuses tokens whose timestamp is further than this from its clock. */
export const MESH_MAX_SKEW_MINUTES = 120;

export interface MeshTokenInput {
  mailbox: string;
  password: string;
  sharedKey: string;
  nonce: string;
  nonceCount: number;
  /** yyyyMMddHHmm, UTC. */
  timestamp: string;
}

/** UTC yyyyMMddHHmm. */
export function meshTimestamp(at: Date): string {
  return at.toISOString().replace(/[-:T]/g, '').slice(0, 12);
}

/** The header value for one request, from explicit inputs (unit tests use fixed vectors). */
export function meshAuthorization(input: MeshTokenInput): string {
  const mailbox = input.mailbox.toUpperCase();
  const hash = createHmac('sha256', input.sharedKey)
    .update(`${mailbox}:${input.nonce}:${input.nonceCount}:${input.password}:${input.timestamp}`, 'utf8')
    .digest('hex');
  return `${MESH_AUTH_SCHEME} ${mailbox}:${input.nonce}:${input.nonceCount}:${input.timestamp}:${hash}`;
}

/**
 * Makes one fresh token per request and watches the server's clock. Each response's `Date` header
 * updates the observed offset; when it is beyond MESH's limit the next token is refused locally with
 * a clear error instead of being sent to be rejected as bad credentials.
 */
export class MeshTokenSource {
  readonly #mailbox: string;
  readonly #password: { reveal(): string };
  readonly #sharedKey: { reveal(): string };
  readonly #now: () => number;
  #offsetMs = 0;

  constructor(
    mailbox: string,
    password: { reveal(): string },
    sharedKey: { reveal(): string },
    now: () => number = Date.now,
  ) {
    this.#mailbox = mailbox;
    this.#password = password;
    this.#sharedKey = sharedKey;
    this.#now = now;
  }

  /** Server time minus local time, from the last response that carried a Date header. */
  get offsetMs(): number {
    return this.#offsetMs;
  }

  /** Record the server's `Date` header (HTTP-date, 1 s resolution). */
  observeServerDate(dateHeader: string | undefined): void {
    if (!dateHeader) return;
    const server = Date.parse(dateHeader);
    if (Number.isFinite(server)) this.#offsetMs = server - this.#now();
  }

  /** Minutes between the local clock and MESH's, rounded. */
  get skewMinutes(): number {
    return Math.round(Math.abs(this.#offsetMs) / 60_000);
  }

  next(): string {
    if (Math.abs(this.#offsetMs) > MESH_MAX_SKEW_MINUTES * 60_000) {
      throw new MeshClockSkewError(this.skewMinutes, MESH_MAX_SKEW_MINUTES);
    }
    return meshAuthorization({
      mailbox: this.#mailbox,
      password: this.#password.reveal(),
      sharedKey: this.#sharedKey.reveal(),
      nonce: randomUUID(),
      nonceCount: 0,
      timestamp: meshTimestamp(new Date(this.#now())),
    });
  }
}
