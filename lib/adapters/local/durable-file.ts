/**
 * Write a file so that, once this returns, it is on disk whole under its final name: write a
 * temporary name, fsync it, rename it into place, fsync the folder. A crash at any point leaves
 * either the old state or the whole new file (plus, at worst, a stray temporary file, which
 * {@link removeStrayTemporaries} clears at the next start).
 */
import {
  closeSync,
  fsyncSync,
  linkSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';

const TMP_SUFFIX = '.tmp';

/**
 * With `replace: false` the file is hard-linked into place instead of renamed (a link never replaces
 * an existing file): returns false, writing nothing, when `file` already exists.
 */
export function writeFileDurably(
  file: string,
  bytes: Uint8Array,
  mode: number,
  opts: { replace?: boolean } = {},
): boolean {
  const tmp = `${file}.${process.pid}${TMP_SUFFIX}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    let offset = 0;
    while (offset < bytes.byteLength) offset += writeSync(fd, bytes, offset, bytes.byteLength - offset);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw error;
  }
  closeSync(fd);
  if (opts.replace === false) {
    try {
      linkSync(tmp, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      return false;
    } finally {
      rmSync(tmp, { force: true });
    }
  } else {
    renameSync(tmp, file);
  }
  syncFolder(dirname(file));
  return true;
}

function syncFolder(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Remove temporary files a crash left in `dir` (never a finished file). Returns how many. */
export function removeStrayTemporaries(dir: string): number {
  let n = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (/\.\d+\.tmp$/.test(name)) {
      rmSync(join(dir, name), { force: true });
      n += 1;
    }
  }
  return n;
}
