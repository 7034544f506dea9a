/**
 * `itk3` — the command line: keys, credentials, sealing, running messages through the embedded
 * pipeline, an HTTP front door, and the demo. Every bad argument or unreadable file ends with a
 * clear message and a non-zero exit.
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import {
  createKeystore,
  findKey,
  generateKey,
  KEY_ALGS,
  KEY_PURPOSES,
  type KeyAlg,
  type KeyPurpose,
  publicJwk,
  publicJwks,
  readKeystore,
  writeKeystore,
} from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import { expiredGrantWarnings, keystoreProblems } from '../config/deployment-checks.js';
import { configJsonSchema, loadConfigFile } from '../config/load.js';
import { generateOperatorToken, operatorTokenFromFile } from '../console/token.js';
import { isSigningAlg, KID_PATTERN } from '../envelope/contract.js';
import { sealMessage } from '../envelope/seal.js';
import { mintToken } from '../envelope/token.js';
import { ConfigError, PipelineError, UsageError } from '../errors.js';
import { codesCommand, EXPLAIN_USAGE, explainCommand } from '../explain/cli.js';
import { parseBundle } from '../itk3/index.js';
import { STAGES, type StageName } from '../ports/index.js';
import { type MessageOutcome, type OutcomeView, outcomeView } from '../runtime/embedded.js';
import { sha256Hex } from '../stages/context.js';
import { runDemo } from './demo.js';
import { keysWrapCommand } from './keys-wrap.js';
import { MESH_HELP, meshCommand, startMeshPolling } from './mesh.js';
import {
  awsDlqList,
  awsDlqRedrive,
  awsDlqShow,
  awsTrace,
  commandLinePipeline,
  commandLinePool,
  dlqList,
  dlqRedrive,
  dlqShow,
  openRunState,
  reconcileDeliveryFolders,
  runFiles,
  trace,
  warnUnreachableTargets,
} from './ops.js';
import { DEFAULT_LISTENER_LIMITS, type ListenerLimits, startServer } from './serve.js';

const HELP = `itk3 — ITK3 secure pipeline

Usage: itk3 <command> [options]

Commands:
  demo [--out DIR] [--fast] [--emulator URL [--local-state]]
                                            run the samples and hostile messages through the embedded pipeline
                                            (or, with --emulator, against an emulator's real SQS/KMS/DynamoDB/S3)
  keys init [--keystore F] [--recipient ODS]... [--gateway ODS] [--kid ODS=KID]... [--recipient-alg A] [--modulus N]
                                            create a keystore (recipient + response-signing keys), print public JWKS
                                            (--kid chooses the key id of a recipient's key or of the gateway's
                                            response-signing key; default ods-enc-YYYYMM / ods-response-YYYYMM;
                                            --recipient-alg RSA-OAEP-256 (default, --modulus 2048|3072|4096)
                                            or ECDH-ES+A256KW (P-256))
  keys add --purpose P --alg A --owner O [--kid K] [--keystore F]
                                            add a key (purposes: ${KEY_PURPOSES.join(', ')})
  keys public [--keystore F]                print the public JWKS of every key
  keys wrap --wrapping-key KMS_KEY --kid KID [--spec RSA_4096] [--out F [--force]]
                                            cached key mode: a recipient key pair made in KMS, private key wrapped
                                            under a symmetric KMS key; prints { kid, wrappedPrivateKey, publicJwk }
                                            (--out adds it to a wrapped-keys file for -c itk3:wrappedKeysFile=F;
                                            AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL as usual)
  token --kid ISSUER_KID --iss ISS --sub SUB --aud AUD --org ODS [--org-claim C] [--act ACTOR]... [--lifetime S] [--keystore F]
                                            mint a sender credential with an issuer key from the keystore
  seal FILE --signer-kid KID --to ODS [--recipient-kid KID | --recipient-jwks F] [--keystore F] [--out F]
                                            sign then encrypt an ITK3 Bundle (XML or JSON) for a recipient
  process PATH... --config F [--keystore F] [--out DIR] [--workers N]
                                            run sealed messages (NAME.jwe with its credential NAME.jwt) through
                                            the embedded pipeline; one JSON line per message as it finishes; state in
                                            DIR/state.db, a re-run finishes what a killed run left
  serve --config F [--keystore F] [--port N] [--out DIR] [--stop-timeout S] [--mesh] [--workers N] [--allowed-host H:P]...
        [--headers-timeout S] [--request-timeout S] [--keep-alive-timeout S] [--idle-timeout S]
        [--max-connections N] [--max-backlog-messages N] [--max-backlog-bytes N]
                                            HTTP POST /messages on 127.0.0.1 into the embedded pipeline;
                                            state in DIR/state.db (202 = stored), unfinished work resumed
                                            on start, SIGTERM stops within S seconds (default 10).
                                            GET /messages/<trackingId> with the submitter's credential.
                                            Host must be 127.0.0.1:<port> or localhost:<port> unless
                                            --allowed-host is given; defaults 10 s headers, 60 s request,
                                            5 s keep-alive, 30 s idle, 256 connections; 503 + Retry-After
                                            over 1000 queued messages or 256 MiB; --mesh also polls the
                                            gateway's MESH mailboxes every mesh.pollIntervalSeconds
        [--console] [--operator-token-file F]
                                            the operator console at /console/ (docs/CONSOLE.md); its token
                                            is read from F, or generated (into F with mode 0600, or shown
                                            once on stderr without F)
${MESH_HELP}
  dlq list [--out DIR] [--stage S] [--json]  dead letters an embedded run left (never their bodies)
  dlq show MESSAGE_ID [--out DIR]           one dead letter: stage, reason, attempts and its audit trail
  dlq redrive STAGE|all|MESSAGE_ID --config F [--keystore F] [--out DIR]
                                            send dead letters back to their queue and run them again
  trace TRACKING_ID [--out DIR]             a message's path through the audit trail
  audit verify [--out DIR [--keystore F] | --aws-outputs F] [--json]
                                            prove the hash-chained audit trail complete and unaltered against
                                            its signed checkpoints, or name the first entry that is not
                                            (exit 0 proven, 1 broken); docs/AUDIT.md
                                            (dlq and trace: --aws-outputs F works on a deployed stack, F being
                                            the cdk deploy --outputs-file JSON)
  explain NAME.jwe… --config F [--keystore F] [--json]
  explain --claims F|JSON --routing JSON --config F [--json]
                                            why a message would be delivered or rejected: every check of every
                                            stage, the policy rule or deny-by-default, what would have to change;
                                            never delivers, consumes a jti, signs or writes state
  codes [--markdown | --json]               every rejection code: ITK3 code, stage, meaning, what to change
  config validate F [--keystore F]          validate a configuration document, listing every problem
                                            (--keystore: every recipient and response-signing kid must be in it)
  config schema                             print the configuration's JSON Schema

Defaults: --keystore .itk3/keystore.json, --out .itk3/run
Environment: ITK3_LOG_LEVEL (Powertools log level for the stage handlers, default SILENT)
`;

type Write = (line: string) => void;

export async function main(
  argv: readonly string[],
  write: Write = (l) => process.stdout.write(`${l}\n`),
): Promise<number> {
  const err = (l: string) => process.stderr.write(`${l}\n`);
  try {
    const [command, ...rest] = argv;
    switch (command) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        write(HELP);
        return command === undefined ? 2 : 0;
      case 'demo':
        return await demoCommand(rest, write);
      case 'keys':
        return await keysCommand(rest, write);
      case 'token':
        return await tokenCommand(rest, write);
      case 'seal':
        return await sealCommand(rest, write);
      case 'process':
        return await processCommand(rest, write);
      case 'serve':
        return await serveCommand(rest, write);
      case 'config':
        return configCommand(rest, write);
      case 'explain':
        if (rest.length === 0) throw new UsageError(EXPLAIN_USAGE);
        return await explainCommand(rest, write);
      case 'codes':
        return codesCommand(rest, write);
      case 'dlq':
        return await dlqCommand(rest, write);
      case 'mesh': {
        const { values, positionals } = args(
          rest,
          {
            config: { type: 'string' },
            keystore: { type: 'string', default: '.itk3/keystore.json' },
            out: { type: 'string', default: '.itk3/run' },
          },
          true,
        );
        return await meshCommand(positionals, values, write);
      }

      case 'audit':
        return await auditCommand(rest, write);
      case 'trace': {
        const { values, positionals } = args(
          rest,
          { out: { type: 'string', default: '.itk3/run' }, 'aws-outputs': { type: 'string' } },
          true,
        );
        if (positionals.length !== 1)
          throw new UsageError('usage: itk3 trace TRACKING_ID [--out DIR | --aws-outputs F]');
        if (values['aws-outputs']) return await awsTrace(values['aws-outputs'], positionals[0]!, write);
        return await trace(values.out, positionals[0]!, write);
      }
      default:
        throw new UsageError(`unknown command "${command}" (try: itk3 help)`);
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      err(`error: ${error.message}`);
      return 2;
    }
    if (error instanceof UsageError) {
      err(`error: ${error.message}`);
      return 2;
    }
    if (error instanceof PipelineError) {
      err(`error: ${error.code}: ${error.message}`);
      return 1;
    }
    if (
      error instanceof Error &&
      String((error as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')
    ) {
      err(`error: ${error.message}`);
      return 2;
    }
    err(`error: ${(error as Error).message ?? String(error)}`);
    return 1;
  }
}

function args<const O extends NonNullable<ParseArgsConfig['options']>>(
  argv: readonly string[],
  options: O,
  positionals = false,
) {
  return parseArgs({ args: [...argv], options, allowPositionals: positionals, strict: true });
}

async function demoCommand(argv: readonly string[], write: Write): Promise<number> {
  const { values } = args(argv, {
    out: { type: 'string' },
    fast: { type: 'boolean' },
    emulator: { type: 'string' },
    'local-state': { type: 'boolean' },
  });
  if (values.emulator && !/^http:\/\/127\.0\.0\.1:\d{2,5}$/.test(values.emulator)) {
    throw new UsageError('--emulator must be a loopback endpoint such as http://127.0.0.1:4566');
  }
  const result = await runDemo({
    write,
    ...(values.emulator
      ? { emulator: { endpoint: values.emulator, localState: values['local-state'] === true } }
      : {}),
    ...(values.out ? { out: values.out } : {}),
    ...(values.fast ? { recipientModulus: 2048 } : {}),
  });
  return result.allAsExpected ? 0 : 1;
}

async function keysCommand(argv: readonly string[], write: Write): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'init') {
    const { values } = args(rest, {
      keystore: { type: 'string', default: '.itk3/keystore.json' },
      recipient: { type: 'string', multiple: true },
      gateway: { type: 'string', default: 'ITK3GW' },
      'recipient-alg': { type: 'string', default: 'RSA-OAEP-256' },
      modulus: { type: 'string' },
      force: { type: 'boolean' },
      kid: { type: 'string', multiple: true },
    });
    if (existsSync(values.keystore) && !values.force) {
      throw new UsageError(
        `${values.keystore} exists; pass --force to replace it (its private keys would be lost)`,
      );
    }
    const recipientAlg = values['recipient-alg'];
    if (recipientAlg !== 'RSA-OAEP-256' && recipientAlg !== 'ECDH-ES+A256KW') {
      throw new UsageError('--recipient-alg must be RSA-OAEP-256 or ECDH-ES+A256KW');
    }
    const modulusLength = recipientModulus(recipientAlg, values.modulus) ?? 4096;
    const recipients = values.recipient ?? [];
    if (recipients.length === 0) throw new UsageError('name at least one recipient: --recipient ODS');
    const month = new Date().toISOString().slice(0, 7).replace('-', '');
    for (const ods of [...recipients, values.gateway]) {
      if (!/^[A-Z0-9]{3,10}$/.test(ods))
        throw new UsageError(`"${ods}" is not an ODS code (3–10 upper-case letters or digits)`);
    }
    const chosen = chosenKids(values.kid ?? [], [...recipients, values.gateway]);
    const entries = await Promise.all([
      ...recipients.map((ods) =>
        generateKey(
          'recipient-decrypt',
          recipientAlg,
          chosen.get(ods) ?? `${ods.toLowerCase()}-enc-${month}`,
          ods,
          { modulusLength },
        ),
      ),
      generateKey(
        'response-sign',
        'ES256',
        chosen.get(values.gateway) ?? `${values.gateway.toLowerCase()}-response-${month}`,
        values.gateway,
      ),
    ]);
    const ks = createKeystore(entries);
    writeKeystore(values.keystore, ks);
    process.stderr.write(`keystore written to ${values.keystore} (mode 0600); public JWKS follows\n`);
    write(JSON.stringify(publicJwks(ks), null, 2));
    return 0;
  }
  if (sub === 'add') {
    const { values } = args(rest, {
      keystore: { type: 'string', default: '.itk3/keystore.json' },
      purpose: { type: 'string' },
      alg: { type: 'string' },
      owner: { type: 'string' },
      kid: { type: 'string' },
      modulus: { type: 'string' },
    });
    const purpose = values.purpose as KeyPurpose;
    const alg = values.alg as KeyAlg;
    if (!KEY_PURPOSES.includes(purpose))
      throw new UsageError(`--purpose must be one of ${KEY_PURPOSES.join(', ')}`);
    if (!KEY_ALGS.includes(alg)) throw new UsageError(`--alg must be one of ${KEY_ALGS.join(', ')}`);
    if (!values.owner) throw new UsageError('--owner is required (issuer id or ODS code)');
    const ks = existsSync(values.keystore) ? readKeystore(values.keystore) : createKeystore([]);
    const kid = values.kid ?? `${values.owner.toLowerCase()}-${purpose}-${Date.now().toString(36)}`;
    if (findKey(ks, kid)) throw new UsageError(`kid ${kid} already exists in ${values.keystore}`);
    const modulusLength = recipientModulus(alg, values.modulus);
    const entry = await generateKey(purpose, alg, kid, values.owner, modulusLength ? { modulusLength } : {});
    writeKeystore(values.keystore, createKeystore([...ks.keys, entry]));
    write(JSON.stringify(publicJwk(entry), null, 2));
    return 0;
  }
  if (sub === 'public') {
    const { values } = args(rest, { keystore: { type: 'string', default: '.itk3/keystore.json' } });
    write(JSON.stringify(publicJwks(readKeystore(values.keystore)), null, 2));
    return 0;
  }
  if (sub === 'wrap') return await keysWrapCommand(rest, write);
  throw new UsageError('usage: itk3 keys init|add|public|wrap [options]');
}

/** `--modulus`: RSA only, 2048, 3072 or 4096; `undefined` when not given. */
function recipientModulus(alg: string, modulus: string | undefined): number | undefined {
  if (modulus === undefined) return undefined;
  if (alg === 'ES256' || alg === 'ECDH-ES+A256KW')
    throw new UsageError(`--modulus does not apply to ${alg} (P-256)`);
  const bits = Number(modulus);
  if (![2048, 3072, 4096].includes(bits)) throw new UsageError('--modulus must be 2048, 3072 or 4096');
  return bits;
}

async function tokenCommand(argv: readonly string[], write: Write): Promise<number> {
  const { values } = args(argv, {
    keystore: { type: 'string', default: '.itk3/keystore.json' },
    kid: { type: 'string' },
    iss: { type: 'string' },
    sub: { type: 'string' },
    aud: { type: 'string' },
    org: { type: 'string' },
    'org-claim': { type: 'string', default: 'ods' },
    act: { type: 'string', multiple: true },
    lifetime: { type: 'string', default: '300' },
  });
  for (const name of ['kid', 'iss', 'sub', 'aud', 'org'] as const) {
    if (!values[name]) throw new UsageError(`--${name} is required`);
  }
  const entry = findKey(readKeystore(values.keystore), values.kid!);
  if (!entry) throw new UsageError(`no key ${values.kid} in ${values.keystore}`);
  if (entry.purpose !== 'issuer-sign' || !isSigningAlg(entry.alg)) {
    throw new UsageError(`key ${values.kid} is a ${entry.purpose} key, not an issuer signing key`);
  }
  const lifetime = Number(values.lifetime);
  if (!Number.isInteger(lifetime) || lifetime <= 0 || lifetime > 300)
    throw new UsageError('--lifetime must be 1–300 seconds');
  write(
    await mintToken({
      key: entry.privateJwk,
      kid: entry.kid,
      alg: entry.alg,
      iss: values.iss!,
      sub: values.sub!,
      aud: values.aud!,
      organisation: values.org!,
      organisationClaim: values['org-claim'],
      lifetimeSeconds: lifetime,
      ...(values.act ? { actors: values.act } : {}),
    }),
  );
  return 0;
}

async function sealCommand(argv: readonly string[], write: Write): Promise<number> {
  const { values, positionals } = args(
    argv,
    {
      keystore: { type: 'string', default: '.itk3/keystore.json' },
      'signer-kid': { type: 'string' },
      'recipient-kid': { type: 'string' },
      'recipient-jwks': { type: 'string' },
      to: { type: 'string' },
      out: { type: 'string' },
    },
    true,
  );
  if (positionals.length !== 1) throw new UsageError('usage: itk3 seal FILE --signer-kid KID --to ODS …');
  const file = positionals[0]!;
  if (!values['signer-kid']) throw new UsageError('--signer-kid is required');
  if (!values.to) throw new UsageError('--to is required (the recipient ODS code)');
  const bytes = readInput(file);
  const format = sniffFormat(bytes, file);
  const msg = parseBundle(bytes, format);
  const ks = readKeystore(values.keystore);
  const signer = findKey(ks, values['signer-kid']);
  if (signer?.purpose !== 'sender-sign' || !isSigningAlg(signer.alg)) {
    throw new UsageError(`no sender signing key ${values['signer-kid']} in ${values.keystore}`);
  }
  const recipient = recipientKey(values['recipient-jwks'], values['recipient-kid'], ks);
  const sealed = await sealMessage({
    bundle: bytes,
    format,
    routing: {
      from: msg.header.senderOds ?? signer.owner,
      to: values.to,
      event: msg.header.event.code,
      id: msg.header.id,
    },
    signer: { key: signer.privateJwk, kid: signer.kid, alg: signer.alg },
    recipient,
  });
  if (values.out) writeFileSync(values.out, `${sealed}\n`);
  else write(sealed);
  return 0;
}

function recipientKey(
  jwksFile: string | undefined,
  kid: string | undefined,
  ks: ReturnType<typeof readKeystore>,
) {
  if (jwksFile) {
    const jwks = JSON.parse(readInput(jwksFile).toString()) as {
      keys?: { kid?: string; use?: string; kty?: string; crv?: string; alg?: string }[];
    };
    // An encryption key: RSA (RSA-OAEP-256) or P-256 (ECDH-ES+A256KW); the JWE alg follows the key.
    const keys = (jwks.keys ?? []).filter(
      (k) =>
        (k.kty === 'RSA' || (k.kty === 'EC' && k.crv === 'P-256')) &&
        k.use !== 'sig' &&
        (k.alg === undefined || k.alg === 'RSA-OAEP-256' || k.alg === 'ECDH-ES+A256KW') &&
        (kid === undefined || k.kid === kid),
    );
    if (keys.length !== 1) {
      throw new UsageError(
        '--recipient-jwks must hold exactly one matching RSA or P-256 encryption key (add --recipient-kid)',
      );
    }
    const key = keys[0]!;
    return { key: key as Record<string, string>, kid: key.kid! };
  }
  if (!kid) throw new UsageError('give --recipient-kid (a key in the keystore) or --recipient-jwks FILE');
  const entry = findKey(ks, kid);
  if (entry?.purpose !== 'recipient-decrypt') throw new UsageError(`no recipient key ${kid} in the keystore`);
  return { key: publicJwk(entry) as Record<string, string>, kid };
}

/** How many accepted messages `process` lets wait before it drains (bounds memory and backlog). */
const PROCESS_WINDOW = 64;
/** How many submissions `process` makes at once (they share one commit). */
const SUBMIT_GROUP = 16;

async function processCommand(argv: readonly string[], write: Write): Promise<number> {
  const { values, positionals } = args(
    argv,
    {
      config: { type: 'string' },
      keystore: { type: 'string', default: '.itk3/keystore.json' },
      out: { type: 'string', default: '.itk3/run' },
      workers: { type: 'string' },
    },
    true,
  );
  if (!values.config) throw new UsageError('--config is required');
  if (positionals.length === 0) throw new UsageError('usage: itk3 process FILE_OR_FOLDER… --config F');
  const config = loadConfigFile(values.config);
  const keys = new SoftwareKeyService(readKeystore(values.keystore));
  const sealedFiles = positionals.flatMap(listSealed);
  if (sealedFiles.length === 0) throw new UsageError('no .jwe files found');
  const pool = await commandLinePool(values.workers, values.keystore, config);
  const state = openRunState(values.out);
  const pipeline = commandLinePipeline(config, keys, state, pool ? { pool } : {});
  const stop = () => pipeline.stop();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    // Whatever a killed earlier run left in flight finishes in this one.
    reconcileDeliveryFolders(config, runFiles(values.out).dir);
    pipeline.resume();
    let failures = 0;
    const reported = new Set<string>();
    const report = (file: string, o: MessageOutcome) => {
      if (reported.has(o.traceId)) return;
      reported.add(o.traceId);
      if (o.status !== 'delivered') failures += 1;
      write(JSON.stringify({ file: basename(file), ...outcomeView(o) }));
    };
    // One line per message as it finishes, not at the end.
    pipeline.onOutcome = (o) => {
      const submitted = state.submissionOf(o.traceId);
      if (submitted) report(submitted.file, o);
    };
    let waiting = 0;
    // Submissions go in groups, as concurrent senders would: one commit (one fsync) per group.
    let group: { file: string; key: string; sealed: string; credential: string }[] = [];
    const submitGroup = async () => {
      const results = await Promise.all(
        group.map(async ({ file, key, sealed, credential }) => {
          const remember = (traceId: string) => state.recordSubmission(key, traceId, file);
          if (!credential) return { file, traceId: pipeline.submitRaw(sealed, undefined, remember) };
          const result = await pipeline.submit(credential, sealed, remember);
          return result.status === 202
            ? { file, traceId: result.trackingId }
            : { file, traceId: undefined, refusal: result.error };
        }),
      );
      group = [];
      if (state.failure) throw state.failure;
      for (const result of results) {
        if (result.traceId) {
          waiting += 1;
          continue;
        }
        failures += 1;
        // Turned away at the front door (no tracking id): the front door's own reason.
        const refused: OutcomeView = {
          trackingId: null,
          messageId: null,
          status: 'refused',
          stage: 'ingest',
          itk3Code: null,
          error: 'refusal' in result ? (result.refusal ?? null) : null,
        };
        write(JSON.stringify({ file: basename(result.file), ...refused }));
      }
    };
    for (const file of sealedFiles) {
      if (pipeline.stopping) break;
      const sealed = readInput(file).toString('utf8').trim();
      const tokenFile = file.replace(/\.jwe$/, '.jwt');
      const credential = existsSync(tokenFile) ? readInput(tokenFile).toString('utf8').trim() : '';
      // A file is known by its content: a re-run neither resubmits it (its credential is spent and
      // its message id taken) nor answers the sender again; it reports the outcome it already has.
      const key = sha256Hex(`${credential}\n${sealed}`);
      const known = state.submission(key);
      if (known) {
        const done = state.storedOutcome(known.traceId);
        if (done) report(file, done);
        continue; // otherwise in flight: resumed, reported when it finishes
      }
      group.push({ file, key, sealed, credential });
      if (group.length >= SUBMIT_GROUP) await submitGroup();
      if (waiting >= PROCESS_WINDOW || pipeline.overloaded()) {
        await pipeline.drain();
        waiting = 0;
      }
    }
    if (group.length > 0 && !pipeline.stopping) await submitGroup();
    await pipeline.drain();
    if (pipeline.stopping) {
      process.stderr.write(
        `stopped: unfinished messages stay queued in ${state.file}; run the same command again to finish them\n`,
      );
      return 1;
    }
    return failures === 0 ? 0 : 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    state.close();
    await pool?.close();
  }
}

async function serveCommand(argv: readonly string[], write: Write): Promise<number> {
  const { values } = args(argv, {
    config: { type: 'string' },
    keystore: { type: 'string', default: '.itk3/keystore.json' },
    port: { type: 'string', default: '8080' },
    out: { type: 'string', default: '.itk3/run' },
    'allowed-host': { type: 'string', multiple: true },
    'headers-timeout': { type: 'string' },
    'request-timeout': { type: 'string' },
    'keep-alive-timeout': { type: 'string' },
    'idle-timeout': { type: 'string' },
    'max-connections': { type: 'string' },
    'max-backlog-messages': { type: 'string' },
    'stop-timeout': { type: 'string', default: '10' },
    'max-backlog-bytes': { type: 'string' },
    mesh: { type: 'boolean', default: false },
    console: { type: 'boolean' },
    'operator-token-file': { type: 'string' },
    workers: { type: 'string' },
  });
  if (!values.config) throw new UsageError('--config is required');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be 0–65535');
  const limits: Partial<ListenerLimits> = {};
  const seconds = (flag: string, value: string | undefined, key: keyof ListenerLimits) => {
    if (value === undefined) return;
    const s = Number(value);
    if (!Number.isFinite(s) || s <= 0 || s > 86_400) {
      throw new UsageError(`--${flag} must be a number of seconds above 0 (at most 86400)`);
    }
    limits[key] = Math.max(1, Math.round(s * 1000));
  };
  const count = (flag: string, value: string | undefined, key: keyof ListenerLimits) => {
    if (value === undefined) return;
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag} must be a positive integer`);
    limits[key] = n;
  };
  seconds('headers-timeout', values['headers-timeout'], 'headersTimeoutMs');
  seconds('request-timeout', values['request-timeout'], 'requestTimeoutMs');
  seconds('keep-alive-timeout', values['keep-alive-timeout'], 'keepAliveTimeoutMs');
  seconds('idle-timeout', values['idle-timeout'], 'idleTimeoutMs');
  count('max-connections', values['max-connections'], 'maxConnections');
  count('max-backlog-messages', values['max-backlog-messages'], 'maxBacklogMessages');
  count('max-backlog-bytes', values['max-backlog-bytes'], 'maxBacklogBytes');
  if (
    (limits.headersTimeoutMs ?? DEFAULT_LISTENER_LIMITS.headersTimeoutMs) >
    (limits.requestTimeoutMs ?? DEFAULT_LISTENER_LIMITS.requestTimeoutMs)
  ) {
    throw new UsageError('--headers-timeout must not exceed --request-timeout');
  }
  const allowedHosts = values['allowed-host'];
  for (const host of allowedHosts ?? []) {
    if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host)) {
      throw new UsageError(`--allowed-host "${host}" is not a host[:port]`);
    }
  }
  const stopTimeout = Number(values['stop-timeout']);
  if (!(stopTimeout > 0 && stopTimeout <= 3600))
    throw new UsageError('--stop-timeout must be 1–3600 seconds');
  const config = loadConfigFile(values.config);
  warnUnreachableTargets(config, undefined, values.mesh);
  const tokenFile = values['operator-token-file'];
  const operator =
    tokenFile !== undefined
      ? operatorTokenFromFile(resolve(tokenFile))
      : values.console
        ? { token: generateOperatorToken(), generated: true }
        : undefined;
  let failed: Error | undefined;
  let fail: (e: Error) => void = () => undefined;
  // The keystore is read here first, so an unreadable one is reported as it always was.
  const keys = new SoftwareKeyService(readKeystore(values.keystore));
  const pool = await commandLinePool(values.workers, values.keystore, config);
  const server = await startServer({
    config,
    keys,
    ...(pool ? { pool } : {}),
    baseDir: resolve(values.out),
    port,
    limits,
    ...(allowedHosts ? { allowedHosts } : {}),
    ...(operator ? { console: { operatorToken: operator.token } } : {}),
    onFatal: (e) => fail(e),
  });
  // --mesh: also poll the gateway's MESH mailboxes (config "mesh") into the same pipeline.
  const meshPolling = values.mesh
    ? startMeshPolling(server.pipeline, config, (l) => process.stderr.write(`${l}\n`))
    : undefined;
  // Signal handlers first: a process manager may send SIGTERM as soon as it reads the line below.
  const stopped = new Promise<void>((done) => {
    // The MESH pass in progress ends with the pipeline's drain; a MESH call still hanging is left
    // at the bound (nothing it read was acknowledged before its enqueue was committed).
    const stopBoth = (ms: number) =>
      Promise.all([
        server.close(ms),
        meshPolling && Promise.race([meshPolling.stop(), new Promise((r) => setTimeout(r, ms))]),
      ]).then(() => done());
    const stop = () => {
      process.stderr.write(`stopping: finishing or parking work in hand (at most ${stopTimeout} s)\n`);
      void stopBoth(stopTimeout * 1000);
    };
    fail = (e) => {
      failed = e;
      process.stderr.write(`error: ${e.message}; stopped taking messages, nothing accepted is lost\n`);
      void stopBoth(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  if (server.resumed > 0) write(`resumed ${server.resumed} queued messages the previous run left unfinished`);
  write(
    `listening on http://127.0.0.1:${server.port} — POST /messages, GET /messages/<trackingId>; Ctrl-C to stop`,
  );
  if (meshPolling) {
    write(
      `polling MESH mailboxes ${[...meshPolling.gateway.clients.keys()].join(', ')} every ${config.doc.mesh?.pollIntervalSeconds} s`,
    );
  }
  if (operator) {
    write(`operator console: http://127.0.0.1:${server.port}/console/`);
    // The token is shown here once, or said where it is kept; it is never logged again.
    if (tokenFile !== undefined) {
      process.stderr.write(
        `operator token ${operator.generated ? 'generated into' : 'read from'} ${resolve(tokenFile)}\n`,
      );
    } else {
      process.stderr.write(`operator token (shown once, kept nowhere): ${operator.token}\n`);
    }
  }
  await stopped;
  await pool?.close({ timeoutMs: 0 });
  // A handler abandoned at the deadline may still hold a timer or a crypto job; its work was never
  // committed, so exiting now loses nothing and keeps the stop bound.
  setTimeout(() => process.exit(), 200).unref();
  return failed ? 1 : 0;
}

const AUDIT_USAGE = 'usage: itk3 audit verify [--out DIR [--keystore F] | --aws-outputs F] [--json]';

async function auditCommand(argv: readonly string[], write: Write): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'verify') throw new UsageError(AUDIT_USAGE);
  const { values, positionals } = args(
    rest,
    {
      out: { type: 'string', default: '.itk3/run' },
      keystore: { type: 'string' },
      'aws-outputs': { type: 'string' },
      json: { type: 'boolean' },
    },
    true,
  );
  if (positionals.length > 0) throw new UsageError(AUDIT_USAGE);
  const { auditVerify, awsAuditVerify } = await import('./audit.js');
  if (values['aws-outputs']) return awsAuditVerify(values['aws-outputs'], values.json === true, write);
  return auditVerify(values.out, values.keystore, values.json === true, write);
}

async function dlqCommand(argv: readonly string[], write: Write): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = args(
    rest,
    {
      out: { type: 'string', default: '.itk3/run' },
      stage: { type: 'string' },
      json: { type: 'boolean' },
      config: { type: 'string' },
      keystore: { type: 'string', default: '.itk3/keystore.json' },
      'aws-outputs': { type: 'string' },
    },
    true,
  );
  const aws = values['aws-outputs'];
  if (sub === 'list') {
    if (values.stage && !(STAGES as readonly string[]).includes(values.stage)) {
      throw new UsageError(`--stage must be one of ${STAGES.join(', ')}`);
    }
    if (aws) return awsDlqList(aws, values.stage as StageName | undefined, values.json === true, write);
    return dlqList(values.out, values.stage as StageName | undefined, values.json === true, write);
  }
  if (sub === 'show' && positionals.length === 1) {
    return aws ? awsDlqShow(aws, positionals[0]!, write) : dlqShow(values.out, positionals[0]!, write);
  }
  if (sub === 'redrive' && positionals.length === 1 && aws) return awsDlqRedrive(aws, positionals[0]!, write);
  if (sub === 'redrive' && positionals.length === 1) {
    if (!values.config) throw new UsageError('--config is required to run the redriven messages');
    return dlqRedrive(
      values.out,
      positionals[0]!,
      loadConfigFile(values.config),
      new SoftwareKeyService(readKeystore(values.keystore)),
      write,
    );
  }
  throw new UsageError('usage: itk3 dlq list|show MESSAGE_ID|redrive STAGE|all|MESSAGE_ID [--out DIR]');
}

/** `--kid ODS=KID` values of `keys init`, each naming one of `owners` once. */
function chosenKids(values: readonly string[], owners: readonly string[]): Map<string, string> {
  const chosen = new Map<string, string>();
  for (const value of values) {
    const [ods, kid, ...extra] = value.split('=');
    if (!ods || !kid || extra.length > 0) throw new UsageError(`--kid ${value}: expected ODS=KID`);
    if (!owners.includes(ods)) {
      throw new UsageError(`--kid ${value}: ${ods} is neither a --recipient nor the --gateway`);
    }
    if (!KID_PATTERN.test(kid)) throw new UsageError(`--kid ${value}: a key id is 1–64 of A-Z a-z 0-9 . _ -`);
    if (chosen.has(ods)) throw new UsageError(`--kid: ${ods} is given twice`);
    if ([...chosen.values()].includes(kid)) throw new UsageError(`--kid: key id ${kid} is given twice`);
    chosen.set(ods, kid);
  }
  return chosen;
}

function configCommand(argv: readonly string[], write: Write): number {
  const [sub, ...rest] = argv;
  if (sub === 'schema') {
    write(JSON.stringify(configJsonSchema(), null, 2));
    return 0;
  }
  const { values, positionals } = args(rest, { keystore: { type: 'string' } }, true);
  const file = positionals[0];
  if (sub === 'validate' && file && positionals.length === 1) {
    const config = loadConfigFile(file);
    const warnings = [...config.warnings, ...expiredGrantWarnings(config, Date.now())];
    if (values.keystore) {
      // Without this, a key id the keystore lacks shows only at run time: every message dead-letters.
      const problems = keystoreProblems(config, readKeystore(values.keystore).keys, values.keystore);
      if (problems.length > 0) throw new ConfigError(problems, warnings);
    }
    write(
      `valid: ${config.doc.issuers.length} issuers, ${config.doc.senders.length} senders, ` +
        `${config.doc.recipients.length} recipients, ${config.doc.rules.length} rules, ${config.doc.delegations.length} delegation grants` +
        (values.keystore ? `; every key id is in ${values.keystore}` : ''),
    );
    // Allowed, but widening trust or doing nothing: said on every validation so it is never silent.
    for (const warning of warnings) write(`warning: ${warning}`);
    return 0;
  }
  throw new UsageError('usage: itk3 config validate FILE [--keystore F] | itk3 config schema');
}

function readInput(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new UsageError(`cannot read ${path}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

function sniffFormat(bytes: Buffer, file: string): 'xml' | 'json' {
  const first = bytes
    .toString('utf8', 0, Math.min(bytes.length, 512))
    .replace(/^\uFEFF/, '')
    .trimStart()[0];
  if (first === '<') return 'xml';
  if (first === '{') return 'json';
  throw new UsageError(`${file} is neither XML nor JSON`);
}

function listSealed(path: string): string[] {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    throw new UsageError(`cannot read ${path}: no such file or folder`);
  }
  if (st.isDirectory()) {
    return readdirSync(path)
      .filter((f) => f.endsWith('.jwe'))
      .sort()
      .map((f) => join(path, f));
  }
  if (!path.endsWith('.jwe'))
    throw new UsageError(`${path}: sealed messages must be NAME.jwe (credential in NAME.jwt)`);
  return [path];
}
