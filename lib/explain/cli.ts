/**
 * `itk3 explain` and `itk3 codes` on the command line. Credentials are read from files only: a
 * token on the command line would be visible to every user of the machine (`ps`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { readKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import { loadConfigFile } from '../config/load.js';
import { ItkRoutingSchema } from '../envelope/routing.js';
import { UsageError } from '../errors.js';
import { rejectionCodeRows, rejectionCodesMarkdown } from './codes.js';
import { type ClaimsInput, Explainer, type ExplainInput } from './index.js';
import { renderExplanation } from './render.js';

type Write = (line: string) => void;

const EXPLAIN_USAGE =
  'usage: itk3 explain NAME.jwe… | --sealed F [--credential F] --config F [--keystore F] [--at TIME] [--json]\n' +
  '       itk3 explain --claims F|JSON (--routing JSON | --from ODS --to ODS --event EVT) [--kid K] --config F [--json]';

export interface ExplainOptions {
  config?: string;
  keystore?: string;
  sealed?: string;
  credential?: string;
  claims?: string;
  routing?: string;
  from?: string;
  to?: string;
  event?: string;
  id?: string;
  kid?: string;
  at?: string;
  json?: boolean;
}

export async function explainCommand(
  positionals: readonly string[],
  values: ExplainOptions,
  write: Write,
): Promise<number> {
  if (positionals.length === 0 && values.sealed === undefined && values.claims === undefined) {
    throw new UsageError(EXPLAIN_USAGE);
  }
  if (!values.config) throw new UsageError(`--config is required\n${EXPLAIN_USAGE}`);
  const config = loadConfigFile(values.config);
  const receivedAt = values.at === undefined ? Date.now() : Date.parse(values.at);
  if (Number.isNaN(receivedAt)) throw new UsageError('--at must be an ISO date-time');

  const inputs: { name: string; input: ExplainInput }[] = [];
  if (values.claims !== undefined) {
    if (positionals.length > 0 || values.sealed) {
      throw new UsageError(`give either claims and routing or a sealed message\n${EXPLAIN_USAGE}`);
    }
    const input = {
      claims: claimsFrom(values.claims),
      routing: routingFrom(values),
      ...(values.kid ? { kid: values.kid } : {}),
      receivedAt,
    };
    inputs.push({ name: 'claims', input });
  } else if (values.sealed) {
    if (positionals.length > 0) throw new UsageError(EXPLAIN_USAGE);
    inputs.push({ name: values.sealed, input: sealedInput(values.sealed, values.credential, receivedAt) });
  } else {
    if (positionals.length === 0 || values.credential) throw new UsageError(EXPLAIN_USAGE);
    // Several messages are explained in the order given, as one run: a replayed credential or a
    // reused message id after its original is shown as the pipeline would answer it.
    for (const file of positionals)
      inputs.push({ name: file, input: sealedInput(file, undefined, receivedAt) });
  }

  // The keystore is optional: without it a sealed message is explained up to authorise.
  const keystore = values.keystore ?? (existsSync('.itk3/keystore.json') ? '.itk3/keystore.json' : undefined);
  const explainer = new Explainer({
    config,
    ...(keystore ? { keys: new SoftwareKeyService(readKeystore(keystore)) } : {}),
  });
  const results = [];
  for (const { name, input } of inputs) results.push({ name, explanation: await explainer.explain(input) });
  if (values.json) {
    const json = results.map(({ name, explanation }) =>
      inputs.length > 1 ? { file: name, ...explanation } : explanation,
    );
    write(JSON.stringify(inputs.length > 1 ? json : json[0], null, 2));
  } else {
    for (const [i, { name, explanation }] of results.entries()) {
      if (inputs.length > 1) write(`${i > 0 ? '\n' : ''}== ${name}`);
      for (const line of renderExplanation(explanation)) write(line);
    }
  }
  const passes = results.every(({ explanation: e }) => e.outcome === 'deliver' || e.outcome === 'authorised');
  return passes ? 0 : 1;
}

/** A sealed message file and its credential (`--credential F`, else NAME.jwt beside NAME.jwe). */
function sealedInput(
  sealedFile: string,
  credentialFlag: string | undefined,
  receivedAt: number,
): ExplainInput {
  const credentialFile = credentialFlag ?? sealedFile.replace(/\.jwe$/, '.jwt');
  const credential =
    credentialFlag !== undefined || (credentialFile !== sealedFile && existsSync(credentialFile))
      ? read(credentialFile).trim()
      : undefined;
  return { sealed: read(sealedFile).trim(), ...(credential ? { credential } : {}), receivedAt };
}

export function codesCommand(values: { markdown?: boolean; json?: boolean }, write: Write): number {
  if (values.markdown) {
    write(rejectionCodesMarkdown().trimEnd());
    return 0;
  }
  const rows = rejectionCodeRows();
  if (values.json) {
    write(
      JSON.stringify(
        rows.map((r) => ({ code: r.code, itk3Code: r.itk3Code, ...r.description })),
        null,
        2,
      ),
    );
    return 0;
  }
  for (const r of rows) {
    write(
      `${r.code.padEnd(40)}${r.itk3Code}  ${r.description.stages.join(', ').padEnd(24)}${r.description.meaning}`,
    );
  }
  return 0;
}

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new UsageError(`cannot read ${path}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** Claims as a JSON file or inline JSON (claims carry no secret; a token would). */
function claimsFrom(value: string): Record<string, unknown> {
  const text = value.trimStart().startsWith('{') ? value : read(value);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError('--claims must be a JSON object or a file holding one');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new UsageError('--claims must be a JSON object or a file holding one');
  }
  return json as Record<string, unknown>;
}

function routingFrom(values: {
  routing?: string;
  from?: string;
  to?: string;
  event?: string;
  id?: string;
}): ClaimsInput['routing'] {
  let raw: unknown;
  if (values.routing !== undefined) {
    try {
      raw = JSON.parse(values.routing);
    } catch {
      throw new UsageError('--routing must be JSON such as {"from":"X26","to":"A83627","event":"ITK009D"}');
    }
  } else {
    raw = { from: values.from, to: values.to, event: values.event, ...(values.id ? { id: values.id } : {}) };
  }
  const parsed = ItkRoutingSchema.partial({ id: true }).safeParse(raw);
  if (!parsed.success) {
    throw new UsageError(
      'routing needs from, to and event (and optionally id): --routing JSON or --from/--to/--event',
    );
  }
  return parsed.data;
}
