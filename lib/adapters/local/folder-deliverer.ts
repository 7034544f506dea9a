import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TransientError } from '../../errors.js';
import type { Deliverer, DeliveryTarget } from '../../ports/index.js';

/**
 * Delivers to folders on this machine. Writes go to a temporary name and are hard-linked into
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
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, bytes, { mode: 0o640 });
      try {
        placed = linkOnce(tmp, file);
      } finally {
        rmSync(tmp, { force: true });
      }
    } catch (cause) {
      throw new TransientError('DELIVERY_UNAVAILABLE', 'cannot write to the delivery folder', { cause });
    }
    if (!placed && Buffer.compare(readFileSync(file), bytes) !== 0) {
      throw new TransientError('DELIVERY_CONFLICT', 'a different file already holds the delivery name');
    }
    return file;
  }
}

/** Link `from` to `to` unless `to` exists (atomic, unlike a rename, which replaces). */
function linkOnce(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}
