/**
 * Bounded reading and decompression. A gzip body can expand by a factor of a thousand, so the
 * output is counted while it is produced and decompression stops the moment it passes the cap:
 * memory never holds more than the cap plus one zlib chunk (a "zip bomb" costs nothing).
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { MeshError, MeshTooLargeError } from './errors.js';

/** gzip's magic number. */
export function looksGzipped(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Read a stream into memory, refusing more than `maxBytes`. */
export async function readBounded(
  source: Readable | AsyncIterable<Uint8Array>,
  maxBytes: number,
  what: string,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const part of source as AsyncIterable<Uint8Array>) {
    total += part.byteLength;
    if (total > maxBytes) {
      if ('destroy' in source && typeof source.destroy === 'function') source.destroy();
      throw new MeshTooLargeError(`${what} exceeds the ${maxBytes}-byte limit`);
    }
    parts.push(Buffer.from(part.buffer, part.byteOffset, part.byteLength));
  }
  return Buffer.concat(parts, total);
}

/**
 * Decompress gzip from `source`, refusing compressed input above `maxInputBytes` and output above
 * `maxOutputBytes`. Corrupt gzip is a permanent error.
 */
export async function gunzipBounded(
  source: Readable | AsyncIterable<Uint8Array> | Uint8Array,
  limits: { maxInputBytes: number; maxOutputBytes: number },
  what: string,
): Promise<Buffer> {
  const input: AsyncIterable<Uint8Array> =
    source instanceof Uint8Array
      ? (async function* () {
          yield source;
        })()
      : source;
  let consumed = 0;
  const parts: Buffer[] = [];
  let produced = 0;
  try {
    await pipeline(
      async function* () {
        for await (const part of input) {
          consumed += part.byteLength;
          if (consumed > limits.maxInputBytes) {
            throw new MeshTooLargeError(
              `${what} (compressed) exceeds the ${limits.maxInputBytes}-byte limit`,
            );
          }
          yield part;
        }
      },
      createGunzip({ chunkSize: 64 * 1024 }),
      async (output: AsyncIterable<Buffer>) => {
        for await (const part of output) {
          produced += part.byteLength;
          if (produced > limits.maxOutputBytes) {
            throw new MeshTooLargeError(
              `${what} decompresses to more than the ${limits.maxOutputBytes}-byte limit (refused while decompressing)`,
            );
          }
          parts.push(part);
        }
      },
    );
  } catch (error) {
    if (error instanceof MeshError) throw error;
    if (isZlibError(error)) throw new MeshError('permanent', `${what} is not valid gzip`);
    throw error;
  } finally {
    if (!(source instanceof Uint8Array) && 'destroy' in source && typeof source.destroy === 'function') {
      if (!source.destroyed) source.destroy();
    }
  }
  return Buffer.concat(parts, produced);
}

function isZlibError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('Z_') || code === 'ERR_INVALID_ARG_TYPE');
}
