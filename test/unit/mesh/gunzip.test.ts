/**
 * Bounded decompression: a gzip bomb is refused while it decompresses (not after), compressed input
 * has its own cap, corrupt gzip is a permanent error, good data round-trips across many input pieces.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { gunzipBounded, MeshError, MeshTooLargeError, readBounded } from '../../../lib/mesh/index.js';

describe('bounded gunzip', () => {
  it('round-trips data fed in many small pieces', async () => {
    const data = randomBytes(300_000);
    const packed = gzipSync(data);
    const pieces = Array.from({ length: Math.ceil(packed.length / 1000) }, (_, i) =>
      packed.subarray(i * 1000, (i + 1) * 1000),
    );
    const out = await gunzipBounded(
      Readable.from(pieces),
      { maxInputBytes: packed.length, maxOutputBytes: data.length },
      'test',
    );
    expect(Buffer.compare(out, data)).toBe(0);
  });

  it('refuses a bomb during decompression, long before it is fully expanded', async () => {
    // 256 MiB of zeros compresses to about 256 KiB; decompressing it whole would need 256 MiB of memory.
    const chunk = Buffer.alloc(16 * 1024 * 1024);
    const gz = (await import('node:zlib')).createGzip({ level: 9 });
    const parts: Buffer[] = [];
    gz.on('data', (b: Buffer) => parts.push(b));
    const ended = new Promise((resolve) => gz.on('end', resolve));
    for (let i = 0; i < 16; i += 1) gz.write(chunk);
    gz.end();
    await ended;
    const bomb = Buffer.concat(parts);
    expect(bomb.length).toBeLessThan(512 * 1024);
    const before = process.memoryUsage().rss;
    const started = Date.now();
    await expect(
      gunzipBounded(
        bomb,
        { maxInputBytes: 4 * 1024 * 1024, maxOutputBytes: 5 * 1024 * 1024 },
        'MESH message X',
      ),
    ).rejects.toThrow(
      /MESH message X decompresses to more than the 5242880-byte limit \(refused while decompressing\)/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024);
  });

  it('refuses compressed input above its own cap before decompressing it all', async () => {
    const packed = gzipSync(randomBytes(100_000)); // incompressible: about 100 KB
    await expect(
      gunzipBounded(packed, { maxInputBytes: 50_000, maxOutputBytes: 10_000_000 }, 'chunk'),
    ).rejects.toBeInstanceOf(MeshTooLargeError);
  });

  it('reports corrupt and truncated gzip as permanent', async () => {
    const packed = gzipSync(Buffer.from('<Bundle/>'.repeat(100)));
    for (const bad of [Buffer.from('not gzip at all'), packed.subarray(0, packed.length - 10)]) {
      const error = await gunzipBounded(bad, { maxInputBytes: 1e6, maxOutputBytes: 1e6 }, 'body').catch(
        (e) => e,
      );
      expect(error).toBeInstanceOf(MeshError);
      expect((error as MeshError).kind).toBe('permanent');
      expect((error as Error).message).toBe('body is not valid gzip');
    }
  });

  it('readBounded stops at the cap', async () => {
    await expect(
      readBounded(Readable.from([Buffer.alloc(600), Buffer.alloc(600)]), 1000, 'x'),
    ).rejects.toThrow('x exceeds the 1000-byte limit');
    expect((await readBounded(Readable.from([Buffer.alloc(600)]), 1000, 'x')).length).toBe(600);
  });
});
