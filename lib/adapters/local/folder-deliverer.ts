import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TransientError } from '../../errors.js';
import type { Deliverer, DeliveryTarget } from '../../ports/index.js';
import { writeFileDurably } from './durable-file.js';

/**
 * Delivers to folders on this machine. Writes go to a temporary name and are renamed into place,
 * so a reader never sees half a file and a repeated delivery of the same name has one effect.
 * Relative target paths resolve against `baseDir`.
 */
export class FolderDeliverer implements Deliverer {
  readonly #baseDir: string;

  constructor(baseDir: string) {
    this.#baseDir = baseDir;
  }

  async deliver(target: DeliveryTarget, name: string, bytes: Uint8Array): Promise<string> {
    if (target.type !== 'folder') {
      // Embedded mode has no AWS: an s3/sqs target is a configuration for the deployed mode.
      throw new TransientError('DELIVERY_UNAVAILABLE', `target type ${target.type} needs the AWS deliverer`);
    }
    if (!/^[A-Za-z0-9._-]{1,200}$/.test(name)) throw new Error('unsafe delivery file name');
    const dir = resolve(this.#baseDir, target.path);
    const file = join(dir, name);
    try {
      mkdirSync(dir, { recursive: true });
      // On disk before the delivery's outcome can be committed (docs/DURABILITY.md).
      writeFileDurably(file, bytes, 0o640);
    } catch (cause) {
      const errno = (cause as NodeJS.ErrnoException).code ?? 'error';
      throw new TransientError('DELIVERY_UNAVAILABLE', `cannot write to the delivery folder (${errno})`, {
        cause,
      });
    }
    return file;
  }
}
