/**
 * docs/worked-example.sh, run as written: keys, a configuration checked against its keystore, a
 * Bundle sealed by the sender, `itk3 explain`, `itk3 serve` on a loopback port, the POST, and the
 * delivered Bundle and signed ITK3 response it waits for (bounded loops; the script stops the
 * server it started on exit).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../support/world.js';

const script = join(import.meta.dirname, '../../docs/worked-example.sh');
const hasCurl = spawnSync('curl', ['--version']).status === 0;
if (!hasCurl) console.log('worked example skipped: curl is not installed');

afterAll(removeTempDirs);

describe.skipIf(!hasCurl)('docs/worked-example.sh', () => {
  it('runs from zero to a delivered Bundle and a verified ITK008M 20013, and stops its server', async () => {
    const work = makeTempDir('itk3-worked-example-');
    const run = spawnSync('bash', [script, work], { encoding: 'utf8', timeout: 120_000 });
    const output = `${run.stdout}\n${run.stderr}`;
    expect(run.status, output).toBe(0);
    expect(output).toMatch(/every key id is in gateway-keystore\.json/);
    expect(output).toMatch(/result: every check passed/);
    expect(output).toMatch(/\{"trackingId":"[0-9a-f-]{36}"\}/);
    expect(output).toMatch(/delivered byte-identical/);
    expect(output).toMatch(/response signature verified; ITK3 code 20013/);
    // The server the script started is gone: its port refuses connections.
    const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(
      readFileSync(join(work, 'serve.log'), 'utf8'),
    )?.[1];
    expect(port).toBeTruthy();
    await expect(fetch(`http://127.0.0.1:${port}/messages`)).rejects.toThrow();
  }, 150_000);
});
