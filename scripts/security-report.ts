/**
 * `npm run security:report`: run the security and load suites, then (re)write the generated tables
 * of docs/SECURITY.md from the results files they leave in reports/security/*.json.
 *
 * Only the text between marker comments is replaced (`<!-- attacks:begin -->` … `<!-- attacks:end -->`,
 * and likewise `parsers`, `faults`, `corpora`, `logs`, `load`); everything else in the document is
 * hand-written and kept. Options:
 *
 *   --no-run      do not run the suites; rebuild the tables from the existing results files
 *   --skip-load   run test/security only (the load table keeps the last load.json, if any)
 *
 * Exits with the test run's status, after writing the tables, so CI fails on a red suite but the
 * document still shows what ran.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const reportsDir = path.join(root, 'reports', 'security');
const docPath = path.join(root, 'docs', 'SECURITY.md');

interface AttackRow {
  id: string;
  attack: string;
  stage: string;
  outcome: string;
  itk3Code: string | null;
  code: string | null;
  http?: number;
  ms?: number;
}
interface FaultRow {
  fault: string;
  outcome: string;
  expected: string;
  delivered: number;
  rejected: number;
  deadLettered: number;
  duplicates: number;
  duplicateFiles?: number;
  duplicateAuditEvents?: number;
  lost: number;
  deadLetterReasons?: Record<string, number>;
}
interface RowsDoc<Row> {
  suite: string;
  generatedAt: string;
  rows: Row[];
  [k: string]: unknown;
}

function read<T>(name: string): T | undefined {
  const file = path.join(reportsDir, name);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : undefined;
}

/** Table cell: no pipes or newlines; code-looking values in backticks. */
function cell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '—';
  return String(value).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}
const code = (value: unknown) =>
  value === null || value === undefined || value === '' ? '—' : `\`${cell(value)}\``;
const when = (iso: string | undefined) =>
  iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : 'not run';

function attacksSection(): string {
  const doc = read<RowsDoc<AttackRow>>('attacks.json');
  if (!doc) return '_No results: run `npx vitest run test/security/attacks.test.ts`._';
  const byOutcome: Record<string, number> = {};
  for (const r of doc.rows) byOutcome[r.outcome] = (byOutcome[r.outcome] ?? 0) + 1;
  const lines = [
    `Run ${when(doc.generatedAt)} — ${doc.rows.length} cases: ${Object.entries(byOutcome)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ')} (the delivered ones are controls and accepted edges, e.g. \`exp\` + skew − 1 s).`,
    '',
    '| # | attack | stage | outcome | ITK3 | code |',
    '| --- | --- | --- | --- | --- | --- |',
    ...doc.rows.map(
      (r) =>
        `| ${cell(r.id)} | ${cell(r.attack)} | ${cell(r.stage)} | ${cell(r.outcome)} | ${r.http ? `HTTP ${r.http}` : cell(r.itk3Code)} | ${code(r.code)} |`,
    ),
  ];
  return lines.join('\n');
}

function parsersSection(): string {
  const doc = read<RowsDoc<AttackRow>>('parsers.json');
  if (!doc) return '_No results: run `npx vitest run test/security/parsers.test.ts`._';
  return [
    `Run ${when(doc.generatedAt)} — ${doc.rows.length} cases. \`ms\`: time of the refusal itself for the size caps (parser call), or of the whole five-stage run for hostile Bundles.`,
    '',
    '| # | input | stage | outcome | ITK3 | code | ms |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...doc.rows.map(
      (r) =>
        `| ${cell(r.id)} | ${cell(r.attack)} | ${cell(r.stage)} | ${cell(r.outcome)} | ${cell(r.itk3Code)} | ${code(r.code)} | ${cell(r.ms)} |`,
    ),
  ].join('\n');
}

function faultsSection(): string {
  const doc = read<RowsDoc<FaultRow>>('faults.json');
  if (!doc) return '_No results: run `npx vitest run test/security/faults.test.ts`._';
  const lost = doc.rows.reduce((n, r) => n + r.lost, 0);
  const dupFiles = doc.rows.reduce((n, r) => n + (r.duplicateFiles ?? 0), 0);
  return [
    `Run ${when(doc.generatedAt)} — ${doc.rows.length} faults, 12 messages each (9 valid, 3 hostile). Lost in total: ${lost}. Duplicate delivery files: ${dupFiles}. "Duplicates" counts extra delivery files plus extra \`delivered\` audit events per message id (finding F4, fixed: must be 0).`,
    '',
    '| fault | outcome | delivered | rejected | dead-lettered | duplicates (files / audit) | lost | expected |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...doc.rows.map((r) => {
      const reasons = r.deadLetterReasons
        ? ` (${Object.entries(r.deadLetterReasons)
            .map(([k, n]) => `${n}× ${k}`)
            .join(', ')})`
        : '';
      return `| ${cell(r.fault)} | ${cell(r.outcome + reasons)} | ${r.delivered} | ${r.rejected} | ${r.deadLettered} | ${r.duplicates} (${r.duplicateFiles ?? '?'} / ${r.duplicateAuditEvents ?? '?'}) | ${r.lost} | ${cell(r.expected)} |`;
    }),
  ].join('\n');
}

interface Tally {
  total?: number;
  valid?: number;
  invalid?: number;
  validAccepted?: number;
  validRejected?: number;
  invalidAccepted?: number;
  invalidRejected?: number;
  validRejectedByReason?: Record<string, number>;
}

function corporaSection(): string {
  const doc = read<{ generatedAt: string; vectorsDir?: string; totals: Record<string, unknown> }>(
    'corpora.json',
  );
  if (!doc)
    return '_No results (the corpora are read from `../shared/fixtures/jose-cookbook`; the suite skips when absent)._';
  const t = doc.totals;
  const jwe = t.wycheproofJwe as Tally | undefined;
  const jwePipe = t.wycheproofJwePipeline as
    | { total: number; delivered: number; unwrapCalls: number; byStageCode: Record<string, number> }
    | undefined;
  const jws = t.wycheproofJws as
    | {
        contract: Tally;
        signature: Tally & {
          run: number;
          notRegistrable: number;
          validRejectedErrata: Record<string, string>;
          notRegistrableByReason: Record<string, number>;
        };
      }
    | undefined;
  const rfc = (t.rfc7520 as Record<string, unknown>[] | undefined) ?? [];
  const row = (name: string, path: string, x: Tally | undefined) =>
    x
      ? `| ${name} | ${path} | ${x.total ?? '—'} | ${x.valid ?? '—'} / ${x.invalid ?? '—'} | ${x.validAccepted ?? 0} | ${x.validRejected ?? 0} | ${x.invalidRejected ?? 0} | **${x.invalidAccepted ?? 0}** |`
      : `| ${name} | ${path} | not run | | | | | |`;
  const reasons = (x: Tally | undefined) =>
    Object.entries(x?.validRejectedByReason ?? {})
      .map(([k, n]) => `  - ${n} × ${k}`)
      .join('\n');
  const lines = [
    `Run ${when(doc.generatedAt)}.`,
    '',
    '| corpus | code path | vectors | valid / invalid | valid accepted | valid rejected | invalid rejected | invalid accepted |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    row('Wycheproof JWE, RSA-OAEP-256 groups', '`parseSealed` + `decryptSealed` (key service)', jwe),
    row('Wycheproof JWS, all groups', '`parseSigned` + `verifySigned` (verify stage)', jws?.contract),
  ];
  if (jws) {
    const s = jws.signature;
    lines.push(
      `| Wycheproof JWS, registrable keys | \`verifySigned\` on the unparsed header (key registry, alg pinning, \`node:crypto\` verify) | ${s.run} | — | ${s.validAccepted ?? 0} | ${s.validRejected ?? 0} | ${s.invalidRejected ?? 0} | **${s.invalidAccepted ?? 0}** |`,
    );
  }
  if (jwePipe) {
    lines.push(
      '',
      `Every one of the ${jwePipe.total} Wycheproof JWE vectors, submitted with a valid credential through the running pipeline: ${jwePipe.delivered} delivered, ${jwePipe.unwrapCalls} key-service calls (${Object.entries(
        jwePipe.byStageCode,
      )
        .map(([k, n]) => `${n} × ${k}`)
        .join(', ')}).`,
    );
  }
  lines.push(
    '',
    'Valid vectors refused, by reason (none is a forgery; the errata maps in test/security/corpora.test.ts list each tcId):',
    '',
  );
  if (jwe) lines.push('- JWE:', reasons(jwe));
  if (jws) {
    lines.push('- JWS (contract layer):', reasons(jws.contract));
    lines.push(
      '- JWS (signature layer):',
      ...Object.entries(jws.signature.validRejectedErrata ?? {}).map(([id, why]) => `  - tcId ${id}: ${why}`),
      `- JWS groups whose key cannot be registered at all (${jws.signature.notRegistrable} vectors): ${Object.entries(
        jws.signature.notRegistrableByReason ?? {},
      )
        .map(([k, n]) => `${n} × ${k.replace(/ cannot be registered.*$/, '')}`)
        .join('; ')} — the configuration admits RS512, PS256 and ES256 keys only.`,
    );
  }
  if (rfc.length > 0) {
    lines.push('', '| RFC 7520 vector | jose | pipeline | reason |', '| --- | --- | --- | --- |');
    for (const r of rfc) {
      if (r.refused) {
        const refused = r.refused as Record<string, string>;
        const counts: Record<string, number> = {};
        for (const c of Object.values(refused)) counts[c] = (counts[c] ?? 0) + 1;
        lines.push(
          `| ${cell(r.vector)} (${Object.keys(refused).length} files) | — | refused: ${Object.entries(counts)
            .map(([k, n]) => `${n} × \`${k}\``)
            .join(', ')} | outside the allow-lists or missing the contract headers |`,
        );
        continue;
      }
      const pipeline = r.pipeline as { stage: string; code: string } | undefined;
      const first = (r.messageSignature ?? r.sealed) as { code?: string } | undefined;
      lines.push(
        `| ${cell(r.vector)} | ${cell(r.jose)} | ${pipeline ? `${pipeline.stage}: \`${pipeline.code}\`` : `\`${first?.code ?? '?'}\``}${r.credential ? ` (as a credential: \`${(r.credential as { code: string }).code}\`)` : ''} | ${cell(r.reason)} |`,
      );
    }
  }
  return lines.join('\n');
}

function logsSection(): string {
  const doc = read<RowsDoc<Record<string, unknown>>>('logs.json');
  const ev = read<RowsDoc<Record<string, unknown>>>('logs-event.json');
  if (!doc) return '_No results: run `npx vitest run test/security/logs.test.ts`._';
  const r = doc.rows[0] ?? {};
  const lines = [
    `Run ${when(doc.generatedAt)} — ${cell(r.run)}: ${cell(r.messages)} messages, ${cell(r.logLines)} log lines and ${cell(r.auditEntries)} audit entries scanned against ${cell(r.bundlesProtected)} Bundles (${cell(r.nhsNumbersInBundles)} distinct NHS numbers) and ${cell(r.envelopesProtected)} tokens, envelopes and private key members.`,
    '',
    `- Leaks in log lines: ${JSON.stringify(r.logLeaks) === '{}' ? '**none**' : JSON.stringify(r.logLeaks)}`,
    `- Leaks in the audit trail: ${JSON.stringify(r.auditLeaks) === '{}' ? '**none**' : JSON.stringify(r.auditLeaks)}`,
  ];
  const e = ev?.rows[0];
  if (e) {
    lines.push(
      `- With \`POWERTOOLS_LOGGER_LOG_EVENT=true\` (finding F5, fixed: handlers pin \`logEvent: false\`): ${
        Object.entries((e.logLeaks as Record<string, number>) ?? {})
          .map(([k, n]) => `${n} × ${k}`)
          .join(', ') || 'none'
      }`,
    );
  }
  return lines.join('\n');
}

function loadSection(): string {
  const r = read<Record<string, number | string | Record<string, number>>>('load.json');
  if (!r) return '_No results: run `npm run load` or `npx vitest run test/load`._';
  const by = (r.byOutcome as Record<string, number>) ?? {};
  return [
    `Run ${when(r.generatedAt as string)} (${cell(r.source)}), embedded runtime, RSA-2048 recipient keys, ${process.platform}/${process.arch}.`,
    '',
    '| messages | valid / hostile | delivered | rejected | dead-lettered | in flight | traces without exactly one terminal event | unexpected outcomes |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    `| ${r.messages} | ${r.valid} / ${r.hostile} | ${r.delivered} | ${r.rejected} | ${r.deadLettered} | ${r.inFlight} | ${r.terminalViolations} | ${r.unexpected} |`,
    '',
    `Build (mint, sign, seal) ${((r.buildMs as number) / 1000).toFixed(1)} s, pipeline ${((r.pipelineMs as number) / 1000).toFixed(1)} s (${r.throughput} msg/s), total ${((r.totalMs as number) / 1000).toFixed(1)} s. Heap ${r.heapBeforeMiB} MiB before, ${r.heapAfterMiB} MiB after a forced GC (the in-memory audit trail and once-store grow with the run by design), peak heap ${r.heapPeakMiB} MiB, peak RSS ${r.rssPeakMiB} MiB.`,
    '',
    ...Object.entries(by)
      .sort()
      .map(([k, n]) => `- ${n} × ${k}`),
  ].join('\n');
}

function replaceSection(doc: string, name: string, body: string): string {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i < 0 || j < i) throw new Error(`docs/SECURITY.md has no ${begin} … ${end} markers`);
  return `${doc.slice(0, i + begin.length)}\n${body}\n${doc.slice(j)}`;
}

function main(): void {
  const args = new Set(process.argv.slice(2));
  let status = 0;
  if (!args.has('--no-run')) {
    const suites = args.has('--skip-load') ? ['test/security'] : ['test/security', 'test/load'];
    console.log(`running: npx vitest run ${suites.join(' ')}`);
    const run = spawnSync('npx', ['vitest', 'run', ...suites], { cwd: root, stdio: 'inherit' });
    status = run.status ?? 1;
  }
  let doc = readFileSync(docPath, 'utf8');
  doc = replaceSection(doc, 'attacks', attacksSection());
  doc = replaceSection(doc, 'parsers', parsersSection());
  doc = replaceSection(doc, 'faults', faultsSection());
  doc = replaceSection(doc, 'corpora', corporaSection());
  doc = replaceSection(doc, 'logs', logsSection());
  doc = replaceSection(doc, 'load', loadSection());
  writeFileSync(docPath, doc);
  // The project lints Markdown with Biome: format the regenerated tables so `npm run lint` stays clean.
  spawnSync('npx', ['biome', 'format', '--write', docPath], { cwd: root, stdio: 'ignore' });
  console.log(
    `written ${path.relative(process.cwd(), docPath)}${status === 0 ? '' : ` (the test run failed with status ${status})`}`,
  );
  process.exit(status);
}

main();
