/**
 * Ports for `itk3 explain`: the real stage code runs on them, and nothing leaves. The once-store
 * only reads the remembered state it is given (a jti, message or document id already there is
 * reported exactly as the stage reports it) and keeps what a stage would have written in memory,
 * for this explainer only; the deliverer, queues and audit log refuse; the key service unwraps but
 * never signs.
 */
import { MemoryBlobStore } from '../adapters/local/memory-stores.js';
import type { AuditLog, Deliverer, KeyService, OnceStore, Ports, QueueSender } from '../ports/index.js';

/** Read-only view of remembered state: the value stored under a once-store key, if any. */
export type RememberedLookup = (key: string) => Promise<string | undefined>;

/** Answers from the remembered state, then from what this explainer has seen; writes nothing out. */
export class DryRunOnceStore implements OnceStore {
  readonly #seen = new Map<string, string>();
  readonly #remembered: RememberedLookup | undefined;

  constructor(remembered?: RememberedLookup) {
    this.#remembered = remembered;
  }

  async putIfAbsent(
    key: string,
    value: string,
  ): Promise<{ created: true } | { created: false; existing: string }> {
    const existing = this.#seen.get(key) ?? (await this.#remembered?.(key));
    if (existing !== undefined) return { created: false, existing };
    // Only this explainer remembers it, so explaining an original then its replay shows the replay.
    this.#seen.set(key, value);
    return { created: true };
  }
}

class Refused extends Error {
  constructor(what: string) {
    super(`explain never ${what}`);
  }
}

const refusingDeliverer: Deliverer = {
  deliver: async () => {
    throw new Refused('delivers');
  },
};

const refusingQueues: QueueSender = {
  sendBatch: async () => {
    throw new Refused('queues');
  },
  sendInbound: async () => {
    throw new Refused('queues');
  },
};

const refusingAudit: AuditLog = {
  append: async () => {
    throw new Refused('writes audit entries');
  },
  appendOnce: async () => {
    throw new Refused('writes audit entries');
  },
  byTrace: async () => [],
};

/** A key service that may unwrap a content key or agree one (to decrypt) and nothing else. */
function unwrapOnly(keys: KeyService): KeyService {
  return {
    unwrapKey: (kid, encryptedKey) => keys.unwrapKey(kid, encryptedKey),
    deriveSharedSecret: (kid, epk) => keys.deriveSharedSecret(kid, epk),
    signEs256: async () => {
      throw new Refused('signs');
    },
    publicKeySpki: (kid) => keys.publicKeySpki(kid),
  };
}

const noKeys: KeyService = {
  unwrapKey: async () => {
    throw new Refused('decrypts without a keystore');
  },
  deriveSharedSecret: async () => {
    throw new Refused('decrypts without a keystore');
  },
  signEs256: async () => {
    throw new Refused('signs');
  },
  publicKeySpki: async () => {
    throw new Refused('reads keys without a keystore');
  },
};

export function dryRunPorts(opts: { keys?: KeyService; once: DryRunOnceStore; receivedAt: number }): Ports {
  return {
    keys: opts.keys ? unwrapOnly(opts.keys) : noKeys,
    queues: refusingQueues,
    once: opts.once,
    // Claim-check artefacts of one explanation live in memory and are dropped with it.
    blobs: new MemoryBlobStore(),
    deliverer: refusingDeliverer,
    audit: refusingAudit,
    clock: { now: () => opts.receivedAt },
  };
}
