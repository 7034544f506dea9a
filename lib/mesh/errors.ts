/**
 * Typed MESH failures. Callers decide by `kind`: `auth` and `config` need an operator, `transient`
 * may succeed on the next poll, `permanent` and `too-large` will not succeed by retrying the same call.
 *
 * Messages never carry the mailbox password, the shared secret, the client key or message bytes:
 * they are built from status codes, mailbox ids, message ids and fixed text only, and no request
 * header is ever attached to an error.
 */

export type MeshErrorKind = 'auth' | 'transient' | 'permanent' | 'too-large' | 'clock-skew' | 'config';

export class MeshError extends Error {
  readonly kind: MeshErrorKind;
  /** HTTP status when MESH answered, absent for network failures. */
  readonly status: number | undefined;

  constructor(kind: MeshErrorKind, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.kind = kind;
    this.status = options.status;
  }

  /** Worth retrying later (the poll pass stops, the next one tries again). */
  get transient(): boolean {
    return this.kind === 'transient';
  }
}

/** 401/403 on a mailbox call: the credentials (or the token built from them) were refused. */
export class MeshAuthError extends MeshError {
  constructor(mailbox: string, status: number, hint?: string) {
    super(
      'auth',
      `MESH rejected the mailbox credentials for ${mailbox} (HTTP ${status}): check mailbox id, password and shared key${hint ? `; ${hint}` : ''}`,
      { status },
    );
  }
}

/** A body over a configured cap, found before or during download or decompression. */
export class MeshTooLargeError extends MeshError {
  constructor(message: string) {
    super('too-large', message);
  }
}

/** The local clock is so far from MESH's that every token would be refused. */
export class MeshClockSkewError extends MeshError {
  constructor(skewMinutes: number, limitMinutes: number) {
    super(
      'clock-skew',
      `the local clock is ${skewMinutes} minutes away from MESH's (MESH refuses tokens more than ${limitMinutes} minutes off): fix the system clock (NTP)`,
    );
  }
}

/** Invalid connection options: a programming or deployment error, never retried. */
export class MeshConfigError extends MeshError {
  constructor(message: string) {
    super('config', message);
  }
}
