import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TransientError } from '../../errors.js';
import type { Deliverer, DeliveryTarget } from '../../ports/index.js';
import { writeFileDurably } from './durable-file.js';

/**
 * Delivers to folders on this machine. Writes go to a temporary name, are fsynced and hard-linked into
 * place, so a reader never sees half a file and an existing file is never replaced: a repeated
 * delivery of the same name with the same bytes has one effect, and a different file already under
 * the name is a `DELIVERY_CONFLICT`, never a delivery (issue 9, class 3).
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
    let placed: boolean;
    try {
      mkdirSync(dir, { recursive: true });
      // On disk before the delivery's outcome can be committed (docs/DURABILITY.md), and never
      // replacing a file already under the name.
      placed = writeFileDurably(file, bytes, 0o640, { replace: false });
    } catch (cause) {
      const errno = (cause as NodeJS.ErrnoException).code ?? 'error';
      throw new TransientError('DELIVERY_UNAVAILABLE', `cannot write to the delivery folder (${errno})`, {
        cause,
      });
    }
    if (!placed && Buffer.compare(readFileSync(file), bytes) !== 0) {
      throw new TransientError('DELIVERY_CONFLICT', 'a different file already holds the delivery name');
    }
    return file;
  }
}
