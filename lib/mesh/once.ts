/**
 * "Do this at most once per MESH message, across crashes", on nothing but the conditional-write
 * {@link OnceStore} port.
 *
 * The difficulty: the fact worth remembering ("message M is on the queue, as trace T") exists only
 * after the enqueue, and a once-store cannot be read without writing. So each attempt is numbered:
 *
 *   claim  `<base>#try#n`   written before the action (whoever creates it owns attempt n)
 *   result `<base>#done#n`  written after the action with `done:<result>`
 *
 * A later pass that finds attempt n claimed tries to write `void:` into its result slot. If the slot
 * already says `done:`, the action happened and only the acknowledgement is missing; if the write
 * succeeds, attempt n died before finishing and can never report (its slot is taken), so attempt n+1
 * runs. Hence: a crash before the action or after the result write never repeats the action and never
 * loses it; only a crash in the instant between the action and its result write repeats it (the
 * downstream duplicate check, 20007 on the MessageHeader id, is the backstop for that window).
 * One poller per mailbox is assumed (the AWS poller will hold a per-mailbox lock).
 */
import type { OnceStore } from '../ports/index.js';

/** MESH deletes every message after 30 days; remember a little longer. */
export const MESH_DEDUPE_SECONDS = 31 * 86_400;
/** Each failed pass uses one attempt number (a pass stops at its first queue failure). */
const MAX_ATTEMPTS = 100;

export type OnceOutcome =
  | { status: 'done'; result: string }
  | { status: 'already'; result: string }
  | { status: 'gave-up'; attempts: number };

export async function onceAcrossCrashes(
  once: OnceStore,
  base: string,
  passId: string,
  action: () => Promise<string>,
  ttlSeconds: number = MESH_DEDUPE_SECONDS,
): Promise<OnceOutcome> {
  for (let n = 1; n <= MAX_ATTEMPTS; n += 1) {
    const claim = await once.putIfAbsent(`${base}#try#${n}`, passId, ttlSeconds);
    if (claim.created) {
      let result: string;
      try {
        result = await action();
      } catch (error) {
        // Void our own slot now so the next pass need not probe it; the error goes to the caller.
        await once.putIfAbsent(`${base}#done#${n}`, `void:${passId}`, ttlSeconds).catch(() => undefined);
        throw error;
      }
      // Recording may fail (store down) or find the slot voided (a concurrent poller): the action
      // happened either way, so report it; the caller acknowledges, which ends MESH redelivery.
      await once.putIfAbsent(`${base}#done#${n}`, `done:${result}`, ttlSeconds).catch(() => undefined);
      return { status: 'done', result };
    }
    const slot = await once.putIfAbsent(`${base}#done#${n}`, `void:${passId}`, ttlSeconds);
    if (!slot.created && slot.existing.startsWith('done:')) {
      return { status: 'already', result: slot.existing.slice('done:'.length) };
    }
    // Attempt n died before reporting (now voided, by us or an earlier pass): try the next number.
  }
  return { status: 'gave-up', attempts: MAX_ATTEMPTS };
}
