/**
 * What slowed an independent integrator down, fixed: the Bearer scheme in any case (RFC 7235), a
 * JSON-serialised JWE told to send the compact serialisation (front door and direct SQS), the
 * rejection-code document kept in step with the catalogue, and the CLI: `explain`, `codes`,
 * `keys init --kid`, `config validate --keystore` (missing key ids fail, expired grants warn).
 */
import '../../support/env.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readKeystore, writeKeystore } from '../../../lib/adapters/local/keystore.js';
import { main } from '../../../lib/cli/main.js';
import { ERROR_CATALOGUE } from '../../../lib/errors.js';
import { REJECTION_CODES, rejectionCodesMarkdown } from '../../../lib/explain/index.js';
import { ingest } from '../../../lib/ingest.js';
import { recordFromIngress } from '../../../lib/stages/authenticate.js';
import { buildScenario, tokenFor } from '../../../lib/testkit/scenario.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { sqsRecord, stageContext } from '../../support/records.js';
import {
  buildMessage,
  credentialFor,
  embeddedPipeline,
  makeTempDir,
  removeTempDirs,
  sealAs,
  testWorld,
} from '../../support/world.js';

let world: DemoWorld;

beforeAll(async () => {
  world = await testWorld();
});
afterAll(removeTempDirs);

async function cli(...argv: string[]): Promise<{ code: number; out: string[]; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
  try {
    const code = await main(argv, (line) => out.push(line));
    return { code, out, err: err.join('') };
  } finally {
    spy.mockRestore();
  }
}

function worldOnDisk(configDoc: unknown = world.configDoc): {
  dir: string;
  keystore: string;
  config: string;
} {
  const dir = makeTempDir('itk3-explain-');
  const keystore = join(dir, 'keystore.json');
  const config = join(dir, 'config.json');
  writeKeystore(keystore, world.keystore);
  writeFileSync(config, `${JSON.stringify(configDoc, null, 2)}\n`);
  return { dir, keystore, config };
}

describe('front door and inbound queue', () => {
  it('matches the Authorization scheme case-insensitively (RFC 7235)', async () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      const ctx = stageContext(world, { baseDir: makeTempDir() });
      const credential = await credentialFor(world, 'X26', Date.now());
      const result = await ingest(
        {
          authorization: `${scheme} ${credential}`,
          body: await sealAs(world, 'X26', buildMessage('X26')),
          receivedAt: Date.now(),
          source: 'http',
        },
        ctx.ports,
        ctx.config,
      );
      expect(result.status).toBe(202);
      // On the queue the credential is the attribute the authenticate stage reads, whatever the case.
      const sent = ctx.queues.sent[0];
      const record = recordFromIngress(
        sqsRecord(sent?.body ?? '', { attributes: { Authorization: `${scheme} ${credential}` } }),
      );
      expect(record.credential).toBe(credential);
    }
  });

  it('tells a sender of a JSON-serialised JWE to send the compact serialisation', async () => {
    const ctx = stageContext(world, { baseDir: makeTempDir() });
    const [protectedHeader, encryptedKey, iv, ciphertext, tag] = (
      await sealAs(world, 'X26', buildMessage('X26'))
    ).split('.');
    const json = JSON.stringify({
      protected: protectedHeader,
      encrypted_key: encryptedKey,
      iv,
      ciphertext,
      tag,
    });
    const result = await ingest(
      {
        authorization: `Bearer ${await credentialFor(world, 'X26', Date.now())}`,
        body: json,
        receivedAt: Date.now(),
        source: 'http',
      },
      ctx.ports,
      ctx.config,
    );
    expect(result).toMatchObject({ status: 400, error: 'ENVELOPE_MALFORMED' });
    expect((result as { message: string }).message).toMatch(/send the compact serialisation/);

    // Direct SQS ingestion: the inbound record is refused with the same advice, answered 10009.
    expect(() => recordFromIngress(sqsRecord(json))).toThrow(/send the compact serialisation/);
    const pipeline = embeddedPipeline(world, { baseDir: makeTempDir() });
    const traceId = pipeline.submitRaw(
      json,
      `Bearer ${await tokenFor(world, world.senders.X26, pipeline.clock.now())}`,
    );
    await pipeline.drain();
    expect(await pipeline.outcome(traceId)).toMatchObject({
      status: 'rejected',
      code: 'ENVELOPE_MALFORMED',
      itk3Code: '10009',
    });
  });
});

describe('rejection codes', () => {
  it('describes every catalogue code, and docs/REJECTION-CODES.md is the generated text (regenerate: itk3 codes --markdown)', () => {
    for (const code of Object.keys(ERROR_CATALOGUE)) expect(REJECTION_CODES, code).toHaveProperty(code);
    const onDisk = readFileSync(join(import.meta.dirname, '../../../docs/REJECTION-CODES.md'), 'utf8');
    expect(onDisk).toBe(`${rejectionCodesMarkdown().trimEnd()}\n`);
    for (const code of Object.keys(ERROR_CATALOGUE)) expect(onDisk).toContain(`| \`${code}\` |`);
    expect(onDisk).toMatch(/per sender organisation/);
  });

  it('itk3 codes prints the table, as markdown or JSON', async () => {
    const md = await cli('codes', '--markdown');
    expect(md.code).toBe(0);
    expect(md.out.join('\n')).toBe(rejectionCodesMarkdown().trimEnd());
    const json = await cli('codes', '--json');
    const rows = JSON.parse(json.out.join('\n')) as { code: string; itk3Code: string; stages: string[] }[];
    expect(rows.find((r) => r.code === 'DUPLICATE_DOCUMENT')).toMatchObject({
      itk3Code: '20008',
      stages: ['verify'],
    });
  });
});

describe('itk3 explain on the command line', () => {
  it('explains a sealed message and its credential (NAME.jwe + NAME.jwt), as text and as JSON', async () => {
    const disk = worldOnDisk();
    const sealed = join(disk.dir, 'msg.jwe');
    writeFileSync(sealed, await sealAs(world, 'X26', buildMessage('X26')));
    writeFileSync(join(disk.dir, 'msg.jwt'), await credentialFor(world, 'X26', Date.now()));
    const text = await cli('explain', sealed, '--config', disk.config, '--keystore', disk.keystore);
    expect(text.code).toBe(0);
    expect(text.out.join('\n')).toMatch(/result: every check passed/);
    expect(text.out.join('\n')).toMatch(/policy: rule /);

    // The credential of another organisation: refused at authorise, and the exit code says so.
    writeFileSync(join(disk.dir, 'other.jwt'), await credentialFor(world, 'FQ123', Date.now()));
    const json = await cli(
      'explain',
      '--sealed',
      sealed,
      '--credential',
      join(disk.dir, 'other.jwt'),
      '--config',
      disk.config,
      '--keystore',
      disk.keystore,
      '--json',
    );
    expect(json.code).toBe(1);
    expect(JSON.parse(json.out.join('\n'))).toMatchObject({
      outcome: 'reject',
      stage: 'authorise',
      code: 'ROUTING_SENDER_MISMATCH',
      itk3Code: '20012',
    });
    // Nothing was written next to the inputs: no run folder, no delivery.
    expect(readFileSync(sealed, 'utf8')).toMatch(/^eyJ/);
  });

  it("tells why each of the demo's hostile messages fails, explaining the files in the order the demo sends them", async () => {
    const disk = worldOnDisk();
    const now = Date.now();
    const scenario = await buildScenario(world, now);
    const ordered = [
      ...scenario.filter((m) => (m.phase ?? 1) === 1),
      ...scenario.filter((m) => m.phase === 2),
    ];
    const files = ordered.map((m, i) => {
      const base = join(disk.dir, `${String(i).padStart(2, '0')}-${m.name.replace(/[^A-Za-z0-9_-]/g, '_')}`);
      writeFileSync(`${base}.jwe`, m.sealed);
      if (m.credential) writeFileSync(`${base}.jwt`, m.credential);
      return `${base}.jwe`;
    });
    const r = await cli('explain', ...files, '--config', disk.config, '--keystore', disk.keystore, '--json');
    expect(r.code).toBe(1); // some are hostile
    const results = JSON.parse(r.out.join('\n')) as {
      file: string;
      outcome: string;
      stage?: string;
      code?: string;
      itk3Code?: string;
    }[];
    expect(results).toHaveLength(ordered.length);
    for (const [i, m] of ordered.entries()) {
      const got = results[i];
      expect(got?.file).toBe(files[i]);
      const want =
        m.expected.status === 'delivered'
          ? { outcome: 'deliver' }
          : {
              outcome: 'reject',
              stage: m.expected.stage,
              code: m.expected.code,
              itk3Code: m.expected.itk3Code,
            };
      expect({ name: m.name, ...got }).toMatchObject({ name: m.name, ...want });
    }
  }, 60_000);

  it('explains intended claims and routing without any key', async () => {
    const disk = worldOnDisk();
    const fq = world.senders.FQ123;
    const claimsFile = join(disk.dir, 'claims.json');
    const claims: Record<string, unknown> = {
      iss: fq.issuer.iss,
      sub: fq.client,
      aud: world.config.doc.audience,
    };
    claims[fq.issuer.organisationClaim] = 'FQ123';
    writeFileSync(claimsFile, JSON.stringify(claims));
    const denied = await cli(
      'explain',
      '--claims',
      claimsFile,
      '--routing',
      '{"from":"FQ123","to":"A83627","event":"ITK013D"}',
      '--config',
      disk.config,
    );
    expect(denied.code).toBe(1);
    expect(denied.out.join('\n')).toMatch(/REJECTED at (authenticate|authorise)/);
    const usage = await cli('explain', '--claims', '{}', '--from', 'X26', '--config', disk.config);
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/routing needs from, to and event/);
  });
});

describe('keys init --kid and config validate --keystore', () => {
  it('keys init takes the recipient and response-signing key ids', async () => {
    const keystore = join(makeTempDir(), 'ks.json');
    const r = await cli(
      'keys',
      'init',
      '--keystore',
      keystore,
      '--recipient',
      'A83627',
      '--gateway',
      'ITK3GW',
      '--modulus',
      '2048',
      '--kid',
      'A83627=a83627-enc-1',
      '--kid',
      'ITK3GW=gw-response-1',
    );
    expect(r.code).toBe(0);
    expect(
      readKeystore(keystore)
        .keys.map((k) => [k.kid, k.purpose])
        .sort(),
    ).toEqual([
      ['a83627-enc-1', 'recipient-decrypt'],
      ['gw-response-1', 'response-sign'],
    ]);
    for (const [kid, message] of [
      ['B12345=x', /neither a --recipient nor the --gateway/],
      ['A83627=bad/kid', /a key id is/],
      ['A83627', /expected ODS=KID/],
    ] as const) {
      const bad = await cli(
        'keys',
        'init',
        '--keystore',
        join(makeTempDir(), 'k.json'),
        '--recipient',
        'A83627',
        '--kid',
        kid,
      );
      expect(bad.code).toBe(2);
      expect(bad.err).toMatch(message);
    }
  });

  it('config validate --keystore fails on a response-signing or recipient kid the keystore lacks', async () => {
    const good = worldOnDisk();
    const ok = await cli('config', 'validate', good.config, '--keystore', good.keystore);
    expect(ok.code).toBe(0);
    expect(ok.out[0]).toMatch(/every key id is in/);

    const doc = structuredClone(world.configDoc) as typeof world.configDoc;
    doc.responseSigning = { ...doc.responseSigning, kid: 'not-in-keystore' };
    const firstRecipient = doc.recipients[0] as (typeof doc.recipients)[number];
    firstRecipient.keys = [{ kid: 'missing-enc' }];
    const bad = worldOnDisk(doc);
    const r = await cli('config', 'validate', bad.config, '--keystore', bad.keystore);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/responseSigning\.kid: "not-in-keystore" is not in the keystore/);
    expect(r.err).toMatch(/recipients\.0\.keys\.0\.kid: "missing-enc" is not in the keystore/);
    // Without --keystore the document alone is valid.
    expect((await cli('config', 'validate', bad.config)).code).toBe(0);
  });

  it('config validate warns on delegation grants that have already expired', async () => {
    const disk = worldOnDisk();
    const r = await cli('config', 'validate', disk.config);
    expect(r.code).toBe(0);
    // The demo world holds one grant that expired ten days ago.
    expect(r.out.some((l) => /^warning: delegations\.\d+ ".+" expired on /.test(l))).toBe(true);
  });
});
