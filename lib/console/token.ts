/**
 * The operator token of the console (`itk3 serve --console`): a random secret, different from any
 * sender credential, that every `/console/api/…` request carries as `Authorization: Bearer …`.
 *
 * It comes from `--operator-token-file F` (read when F exists; otherwise generated and written
 * there with mode 0600) or, with `--console` alone, is generated and shown once on stderr. It is
 * never logged after that.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { UsageError } from '../errors.js';

/** Header-safe (RFC 6750 b64token subset) and long enough not to be guessed. */
const TOKEN_SHAPE = /^[A-Za-z0-9._~-]{32,512}$/;

/** 32 random bytes, base64url: 43 characters. */
export function generateOperatorToken(): string {
  return randomBytes(32).toString('base64url');
}

export interface OperatorToken {
  token: string;
  /** True when the token was generated now (and, with a file, written to it). */
  generated: boolean;
}

/**
 * The token kept in `file`: read when the file exists (it must be readable by its owner only, as
 * an SSH key must), generated and written with mode 0600 when it does not.
 */
export function operatorTokenFromFile(file: string): OperatorToken {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new UsageError(`cannot read the operator token file ${file}: ${errorCode(cause)}`);
    }
    const token = generateOperatorToken();
    try {
      // `wx`: never replace a file that appeared in between.
      writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    } catch (writeError) {
      throw new UsageError(`cannot write the operator token file ${file}: ${errorCode(writeError)}`);
    }
    return { token, generated: true };
  }
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new UsageError(
      `the operator token file ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); run chmod 600 ${file}`,
    );
  }
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (cause) {
    throw new UsageError(`cannot read the operator token file ${file}: ${errorCode(cause)}`);
  }
  if (!TOKEN_SHAPE.test(token)) {
    throw new UsageError(
      `the operator token in ${file} must be 32–512 characters of A-Z a-z 0-9 . _ ~ - (delete the file to have one generated)`,
    );
  }
  return { token, generated: false };
}

/**
 * Constant-time check of a presented token: both sides are hashed first, so neither the content
 * nor the length of the expected token leaks through timing.
 */
export function operatorTokenMatches(expected: string, presented: string | undefined): boolean {
  if (presented === undefined) return false;
  const a = createHash('sha256').update(expected, 'utf8').digest();
  const b = createHash('sha256').update(presented, 'utf8').digest();
  return timingSafeEqual(a, b);
}

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? 'error';
}
