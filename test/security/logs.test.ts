/**
 * Logs and audit trail leak nothing (SECURITY-CORPUS.md rule 9, A28; ARCHITECTURE.md §3): every
 * line written during a full run of the demo scenario through the deployed handlers, with
 * Powertools at DEBUG and metrics on, is captured (process.stdout / process.stderr writes, where
 * Powertools' own Console writes, and the console methods) and scanned, as is the audit trail, for
 * message bytes (any 41-character substring of any Bundle), tokens and JWE/JWS segments (any
 * base64url run of 40+ characters found in a credential, sealed message, inner JWS or private
 * key), JWK private members or PEM keys, and NHS numbers (10 digits passing the modulus-11 check).
 */
import './log-env.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { removeTempDirs, testWorld } from '../support/world.js';
import { captureScenarioRun } from './log-run.js';
import { leakSummary, nhsNumbersIn, scanForLeaks } from './log-scan.js';
import { Results } from './support.js';

let world: DemoWorld;
const results = new Results<Record<string, unknown>>('logs.json', 'test/security/logs.test.ts');

beforeAll(async () => {
  world = await testWorld();
});

afterAll(() => {
  results.write();
  removeTempDirs();
});

describe('logs and audit trail of a full run', () => {
  it('carry no message bytes, tokens, key material or NHS numbers', async () => {
    const run = await captureScenarioRun(world);

    // The capture must really see the handlers' output, at every level the run produces.
    expect(run.lines.length).toBeGreaterThan(20);
    expect(run.lines.some((l) => l.includes('"level":"DEBUG"'))).toBe(true);
    expect(run.lines.some((l) => l.includes('"level":"INFO"') && l.includes('record rejected'))).toBe(true);
    expect(run.lines.some((l) => l.includes('"level":"WARN"'))).toBe(true);
    expect(run.lines.some((l) => l.includes('"_aws"'))).toBe(true); // EMF metrics
    expect(run.auditLines.length).toBeGreaterThan(run.messages);

    // The detector finds each kind when it is there (so an empty result means something).
    const bundleText = new TextDecoder().decode(run.secrets.bundles[0]);
    const nhs = run.secrets.bundles.flatMap((b) => nhsNumbersIn(new TextDecoder().decode(b)));
    expect(nhs.length, 'the Bundles carry NHS numbers to protect').toBeGreaterThan(0);
    const planted = [
      `x ${bundleText.slice(200, 260)} y`,
      `token=${run.secrets.envelopes[0]?.slice(10, 60)}`,
      '{"kty":"EC","d":"abc"}',
      `patient ${nhs[0]}`,
    ];
    expect(Object.keys(leakSummary(scanForLeaks(planted, run.secrets))).sort()).toEqual(
      ['bundle-bytes', 'jwk-private-member', 'nhs-number', 'token-or-envelope'].sort(),
    );

    const logLeaks = scanForLeaks(run.lines, run.secrets);
    const auditLeaks = scanForLeaks(run.auditLines, run.secrets);
    results.add({
      run: 'demo scenario, POWERTOOLS_LOG_LEVEL=DEBUG, metrics on, KMS throttling burst',
      messages: run.messages,
      logLines: run.lines.length,
      auditEntries: run.auditLines.length,
      bundlesProtected: run.secrets.bundles.length,
      envelopesProtected: run.secrets.envelopes.length,
      nhsNumbersInBundles: new Set(nhs).size,
      logLeaks: leakSummary(logLeaks),
      auditLeaks: leakSummary(auditLeaks),
    });
    console.info(
      `log scan: ${run.lines.length} log lines, ${run.auditLines.length} audit entries, ${run.secrets.bundles.length} Bundles and ${run.secrets.envelopes.length} tokens/envelopes/key members protected`,
    );
    expect(leakSummary(logLeaks), 'leaks in log lines').toEqual({});
    expect(leakSummary(auditLeaks), 'leaks in the audit trail').toEqual({});
  });
});
