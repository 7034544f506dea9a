/**
 * Deterministic ids for the builders: ids and times are inputs, so the same options always give
 * the same bytes (reproducible tests, stable signatures over built samples).
 */
import { hash } from 'node:crypto';

/** Namespace of our name-based UUIDs (RFC 9562 §5.5); any fixed UUID would do. */
const NAMESPACE = Buffer.from('5d8f6a1e3b2c4e0f9a7b6c5d4e3f2a1b', 'hex');

/**
 * A version-5 UUID derived from `seed`.
 *
 * @example
 * uuidFrom('message-1:sender') // always the same UUID for the same seed
 */
export function uuidFrom(seed: string): string {
  // One-shot over namespace ‖ seed (UTF-8): the same SHA-1 as a Hash fed both, without the object.
  const digest = hash('sha1', Buffer.concat([NAMESPACE, Buffer.from(seed, 'utf8')]), 'buffer');
  const bytes = digest.subarray(0, 16);
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x50;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
