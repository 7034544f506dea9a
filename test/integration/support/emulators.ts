/**
 * Which emulators the integration suites run against, and what each cannot do.
 *
 * Each suite runs once per emulator whose endpoint variable is set (scripts/emulator.sh starts them:
 * ministack on 127.0.0.1:4566, LocalStack on 127.0.0.1:4567). An unset variable skips that
 * emulator's suite with a warning naming it; a documented gap (docs/LOCAL-AWS.md) skips just the
 * affected test, with the reason printed. Nothing is skipped silently.
 */
import { randomBytes } from 'node:crypto';
import { describe, it } from 'vitest';
import { type AwsClients, createAwsClients } from '../../../lib/adapters/aws/clients.js';

/** Capabilities some emulator lacks. */
type Gap =
  | 'dynamodb'
  | 'startMessageMoveTask'
  | 'kmsInvalidCiphertext'
  | 'kmsKeySpecChecks'
  | 'kmsDeriveSharedSecret';

interface Emulator {
  name: 'ministack' | 'localstack';
  envVar: string;
  endpoint: string | undefined;
  /** Gap → why the emulator cannot do it. */
  gaps: Partial<Record<Gap, string>>;
}

const EMULATORS: readonly Emulator[] = [
  {
    name: 'ministack',
    envVar: 'ITK3_MINISTACK_ENDPOINT',
    endpoint: process.env.ITK3_MINISTACK_ENDPOINT || undefined,
    gaps: {
      startMessageMoveTask: 'ministack implements no StartMessageMoveTask (LOCAL-AWS.md §3)',
      kmsDeriveSharedSecret:
        'ministack 1.5.33 implements no KMS DeriveSharedSecret (KEY_AGREEMENT keys), so the direct-mode ECDH-ES path runs on LocalStack 4.14.0 only',
    },
  },
  {
    name: 'localstack',
    envVar: 'ITK3_LOCALSTACK_ENDPOINT',
    endpoint: process.env.ITK3_LOCALSTACK_ENDPOINT || undefined,
    gaps: {
      dynamodb:
        'LocalStack 4.14.0 host mode has no DynamoDB offline: it downloads Java and DynamoDB Local on first use (LOCAL-AWS.md §2.2)',
      kmsInvalidCiphertext:
        'LocalStack 4.14.0 answers Decrypt of a bad RSA ciphertext with 500 InternalError, not InvalidCiphertextException (kms/provider.py lets the cryptography ValueError escape), so the adapter rightly reports it as transient',
      kmsKeySpecChecks:
        'LocalStack 4.14.0 runs GenerateDataKeyPairWithoutPlaintext under an asymmetric (RSA) key instead of refusing it with InvalidKeyUsageException as KMS does',
    },
  },
];

/** Per-emulator context handed to a suite. */
export interface EmulatorContext {
  emulator: Emulator;
  endpoint: string;
  clients: AwsClients;
  /** A name unique to this test file and run: `itk3-it-<tag>-<random>`. */
  unique: (tag: string) => string;
  /** The reason the emulator lacks `gap`, or `undefined` when it has the capability. */
  gap: (gap: Gap) => string | undefined;
  /**
   * `it`, or — when the emulator has `gap` — a skipped `it` whose reason is printed at collection.
   */
  itUnless: (gap: Gap, name: string, fn: () => Promise<void>, timeout?: number) => void;
}

/** Emulator clients: fixed region and fake, non-numeric credentials (LOCAL-AWS.md §8). */
export function emulatorClients(endpoint: string): AwsClients {
  return createAwsClients({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
}

/**
 * `describe(suite)` once per configured emulator.
 *
 * @example
 * ```ts
 * describeEachEmulator('KmsKeyService', ({ clients, itUnless }) => { it('unwraps', async () => { … }); });
 * ```
 */
export function describeEachEmulator(suite: string, body: (ctx: EmulatorContext) => void): void {
  for (const emulator of EMULATORS) {
    const title = `${suite} [${emulator.name}]`;
    const { endpoint } = emulator;
    if (!endpoint) {
      console.warn(
        `SKIPPED suite "${title}": ${emulator.envVar} is not set (start it with scripts/emulator.sh start ${emulator.name} and export ${emulator.envVar}=http://127.0.0.1:${emulator.name === 'ministack' ? 4566 : 4567})`,
      );
      describe.skip(title, () => {
        it(`needs ${emulator.envVar}`, () => {});
      });
      continue;
    }
    describe(title, () => {
      const clients = emulatorClients(endpoint);
      const run = randomBytes(3).toString('hex');
      body({
        emulator,
        endpoint,
        clients,
        unique: (tag) => `itk3-it-${tag}-${run}`,
        gap: (gap) => emulator.gaps[gap],
        itUnless: (gap, name, fn, timeout) => {
          const reason = emulator.gaps[gap];
          if (reason) {
            console.warn(`SKIPPED test "${title} > ${name}": ${reason}`);
            it.skip(`${name} — skipped: ${reason}`, fn);
          } else {
            it(name, fn, timeout);
          }
        },
      });
    });
  }
}

/** Poll `fn` until it returns a value, at most `attempts` times `delayMs` apart. */
export async function eventually<T>(
  fn: () => Promise<T | undefined>,
  attempts = 20,
  delayMs = 250,
): Promise<T> {
  for (let i = 0; i < attempts; i += 1) {
    const value = await fn();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
  throw new Error(`condition not met after ${attempts} attempts`);
}
