/**
 * `itk3` — the command line: keys, credentials, sealing, running messages through the embedded
 * pipeline, an HTTP front door, operations and the demo. Every command is defined once below with
 * commander (its arguments, options and help text); `itk3 --help` and `itk3 <command> --help` are
 * generated from those definitions. Every bad argument or unreadable file ends with one clear
 * `error:` line on stderr and exit 2 (a failure while working: exit 1).
 */

import { join } from 'node:path';
import { Command, type CommanderError, Help, Option } from 'commander';
import { readKeystore } from '../adapters/local/keystore.js';
import { SoftwareKeyService } from '../adapters/local/software-keys.js';
import { loadConfigFile } from '../config/load.js';
import { ConfigError, PipelineError, UsageError } from '../errors.js';
import { codesCommand, type ExplainOptions, explainCommand } from '../explain/cli.js';
import { STAGES, type StageName } from '../pipeline/topology.js';
import { configSchema, configValidate } from './config.js';
import { runDemo } from './demo.js';
import { runMeshDemo } from './demo-mesh.js';
import { type KeysAddOptions, type KeysInitOptions, keysAdd, keysInit, keysPublic } from './keys.js';
import { type KeysWrapOptions, keysWrapCommand } from './keys-wrap.js';
import { meshPoll } from './mesh.js';
import {
  type ProcessOptions,
  processCommand,
  type SealOptions,
  sealCommand,
  type TokenOptions,
  tokenCommand,
} from './messages.js';
import { dlqList, dlqRedrive, dlqShow, type OperatorTarget, trace } from './ops.js';
import { type ServeOptions, serveCommand } from './serve-command.js';

type Write = (line: string) => void;

const DEFAULT_KEYSTORE = '.itk3/keystore.json';
const DEFAULT_OUT = '.itk3/run';

/** Run the command line; resolves to the process exit code. */
export async function main(
  argv: readonly string[],
  write: Write = (l) => process.stdout.write(`${l}\n`),
): Promise<number> {
  const err = (l: string) => process.stderr.write(`${l}\n`);
  let exitCode = 0;
  const program = buildProgram(write, (code) => {
    exitCode = code;
  });
  try {
    if (argv.length === 0) {
      // No command at all: the overview, and the exit of a usage error.
      program.outputHelp();
      return 2;
    }
    // `itk3 help dlq redrive` is `itk3 dlq redrive --help` (commander's help command looks one level down).
    const helpFor = argv[0] === 'help' && argv.length > 1 ? argv[1]! : undefined;
    if (helpFor !== undefined && !program.commands.some((c) => c.name() === helpFor)) {
      throw new UsageError(`unknown command "${helpFor}" (try: itk3 help)`);
    }
    const args = helpFor !== undefined ? [...argv.slice(1), '--help'] : [...argv];
    await program.parseAsync(args, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof HelpShown) return error.exitCode;
    if (error instanceof ConfigError || error instanceof UsageError) {
      err(`error: ${error.message}`);
      return 2;
    }
    if (error instanceof PipelineError) {
      err(`error: ${error.code}: ${error.message}`);
      return 1;
    }
    err(`error: ${(error as Error).message ?? String(error)}`);
    return 1;
  }
}

/** Help was asked for (exit 0), or shown because a command group was given no subcommand (exit 2). */
class HelpShown extends Error {
  constructor(readonly exitCode: number) {
    super('help shown');
  }
}

/**
 * Every command of `itk3`, each defined once with its arguments, options and help text. An action
 * reports its exit code through `setExitCode`; commander's own failures (unknown command or option,
 * missing or extra argument) become UsageErrors through `exitOverride`, so they end like every
 * other usage error, and its output goes through `write` (help) or nowhere (errors: main prints them).
 */
function buildProgram(write: Write, setExitCode: (code: number) => void): Command {
  const program = new Command('itk3')
    .description('ITK3 secure pipeline')
    .usage('<command> [options]')
    .configureOutput({
      writeOut: (s) => write(s.replace(/\n$/, '')),
      writeErr: (s) => process.stderr.write(s),
      // Errors are printed once, by main, as every other usage error is.
      outputError: () => undefined,
    })
    .configureHelp({ helpWidth: 110, visibleCommands: leafCommands, subcommandTerm })
    .helpCommand('help [command]', 'help for a command')
    .addHelpText(
      'after',
      `
Defaults: --keystore ${DEFAULT_KEYSTORE}, --out ${DEFAULT_OUT}
Environment: ITK3_LOG_LEVEL (Powertools log level for the stage handlers, default SILENT);
  AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for the commands that reach AWS (--aws-outputs, keys wrap)
"itk3 <command> --help" shows a command's options.`,
    );

  program
    .command('demo')
    .summary('run the samples and hostile messages through the embedded pipeline')
    .description(
      'Run the NHS ITK3 samples and the hostile messages through the embedded pipeline (or, with\n' +
        "--emulator, against an emulator's real SQS/KMS/DynamoDB/S3) and print one row per message.\n" +
        'Exit 0 when every message ended as a correct pipeline must end it.',
    )
    .option('--out <DIR>', 'working folder to keep (default: a new temporary folder)')
    .option('--fast', 'RSA-2048 recipient keys instead of RSA-4096')
    .option('--emulator <URL>', 'a loopback emulator endpoint such as http://127.0.0.1:4566')
    .option('--local-state', 'with --emulator: once-store and audit in process')
    .option(
      '--mesh',
      "then send the consultation report over NHS England's MESH sandbox with mesh-client\n" +
        '(started from .mesh/venv, or ITK3_MESH_SANDBOX); skipped with a hint when not installed',
    )
    .action(async (opts: DemoCommandOptions) => setExitCode(await demoCommand(opts, write)));

  const keys = program.command('keys').summary('keystores and keys').usage('init|add|public|wrap [options]');
  keys
    .command('init')
    .summary('create a keystore (recipient + response-signing keys) and print its public JWKS')
    .usage('--recipient ODS [--recipient ODS]... [options]')
    .addOption(keystoreOption())
    .addOption(repeatable('--recipient <ODS>', 'a recipient organisation to make a decryption key for'))
    .option('--gateway <ODS>', "the gateway's ODS code (its response-signing key)", 'ITK3GW')
    .option(
      '--kid <ODS=KID>',
      "key id of a recipient's key or of the gateway's response-signing key\n" +
        '(default ods-enc-YYYYMM / ods-response-YYYYMM; repeatable)',
      collect,
    )
    .option('--recipient-alg <ALG>', 'RSA-OAEP-256 or ECDH-ES+A256KW (P-256)', 'RSA-OAEP-256')
    .option('--modulus <BITS>', 'RSA modulus: 2048, 3072 or 4096 (default 4096)')
    .option('--force', 'replace an existing keystore (its private keys are lost)')
    .action(async (opts: KeysInitOptions) => setExitCode(await keysInit(opts, write)));
  keys
    .command('add')
    .summary('add a key to the keystore')
    .usage('--purpose P --alg A --owner O [options]')
    .option('--purpose <P>', 'issuer-sign, sender-sign, recipient-decrypt or response-sign (required)')
    .option('--alg <A>', 'the key algorithm, e.g. ES256, PS256, RSA-OAEP-256 (required)')
    .option('--owner <O>', 'issuer id or ODS code (required)')
    .option('--kid <KID>', 'key id (default: owner-purpose-time)')
    .option('--modulus <BITS>', 'RSA modulus: 2048, 3072 or 4096')
    .addOption(keystoreOption())
    .action(async (opts: KeysAddOptions) => setExitCode(await keysAdd(opts, write)));
  keys
    .command('public')
    .summary('print the public JWKS of every key')
    .addOption(keystoreOption())
    .action((opts: { keystore: string }) => setExitCode(keysPublic(opts, write)));
  keys
    .command('wrap')
    .summary('cached key mode: a recipient key pair made in KMS, private key wrapped by KMS')
    .description(
      'Make a recipient key pair in KMS and wrap its private key under a symmetric KMS key; prints\n' +
        '{ kid, wrappedPrivateKey, publicJwk } (docs/KEY-MODES.md). --out adds it to a wrapped-keys\n' +
        'file for -c itk3:wrappedKeysFile=F. --purpose response-sign makes the P-256 response-signing\n' +
        'key of the deliver stage instead (--kid = responseSigning.kid of the configuration).',
    )
    .usage('--wrapping-key KMS_KEY --kid KID [options]')
    .option('--wrapping-key <KMS_KEY>', 'symmetric KMS key: key id, ARN, alias name or alias ARN (required)')
    .option('--kid <KID>', 'the recipient key id senders will use (required)')
    .option(
      '--purpose <P>',
      'recipient-decrypt (default), or response-sign: the P-256 response-signing key of the deliver stage',
    )
    .option('--spec <SPEC>', 'RSA_2048, RSA_3072, RSA_4096 (default) or ECC_NIST_P256 (response-sign: only)')
    .option('--out <F>', 'add the result to this wrapped-keys file')
    .option('--force', 'with --out: replace the kid if the file holds it')
    .action(async (opts: KeysWrapOptions) => setExitCode(await keysWrapCommand(opts, write)));

  program
    .command('token')
    .summary('mint a sender credential with an issuer key from the keystore')
    .usage('--kid ISSUER_KID --iss ISS --sub SUB --aud AUD --org ODS [options]')
    .option('--kid <ISSUER_KID>', 'issuer signing key in the keystore (required)')
    .option('--iss <ISS>', 'issuer (required)')
    .option('--sub <SUB>', 'subject: the client registered with the organisation (required)')
    .option('--aud <AUD>', "the deployment's audience (required)")
    .option('--org <ODS>', 'the sending organisation (required)')
    .option('--org-claim <C>', 'claim that carries the organisation', 'ods')
    .addOption(repeatable('--act <ACTOR>', 'RFC 8693 actor, outermost first, for delegation'))
    .option('--lifetime <S>', 'seconds, 1–300', '300')
    .addOption(keystoreOption())
    .action(async (opts: TokenOptions) => setExitCode(await tokenCommand(opts, write)));

  program
    .command('seal')
    .summary('sign then encrypt an ITK3 Bundle (XML or JSON) for a recipient')
    .usage('FILE --signer-kid KID --to ODS [--recipient-kid KID | --recipient-jwks F] [options]')
    .argument('<FILE>', 'the ITK3 Bundle')
    .option('--signer-kid <KID>', "the sender's signing key in the keystore (required)")
    .option('--to <ODS>', 'the recipient ODS code (required)')
    .option(
      '--recipient-kid <KID>',
      "the recipient's encryption key (in the keystore, or in --recipient-jwks)",
    )
    .option('--recipient-jwks <F>', "the recipient's published JWKS")
    .option('--out <F>', 'write the sealed message here instead of stdout')
    .addOption(keystoreOption())
    .action(async (file: string, opts: SealOptions) => setExitCode(await sealCommand(file, opts, write)));

  program
    .command('process')
    .summary('run sealed messages through the embedded pipeline; one JSON line per message')
    .description(
      'Run sealed messages (NAME.jwe with its credential NAME.jwt, or folders of them) through the\n' +
        'embedded pipeline; one JSON line per message as it finishes. State in DIR/state.db: a re-run\n' +
        'finishes what a killed run left.',
    )
    .usage('PATH... --config F [options]')
    .argument('<PATH...>', 'sealed message files or folders')
    .option('--config <F>', 'the configuration (required)')
    .addOption(keystoreOption())
    .addOption(outOption())
    .option(
      '--workers <N>',
      'worker threads for unwrap, signature checks and Bundle reading (default: one per core; 0: none)',
    )
    .action(async (paths: string[], opts: ProcessOptions) =>
      setExitCode(await processCommand(paths, opts, write)),
    );

  program
    .command('serve')
    .summary('HTTP POST /messages on 127.0.0.1 into the embedded pipeline')
    .description(
      'HTTP POST /messages on 127.0.0.1 into the embedded pipeline; state in DIR/state.db (202 =\n' +
        'stored), unfinished work resumed on start, SIGTERM stops within --stop-timeout seconds.\n' +
        "GET /messages/<trackingId> with the submitter's credential. Host must be 127.0.0.1:<port> or\n" +
        'localhost:<port> unless --allowed-host is given; 503 + Retry-After over the backlog bounds.\n' +
        'The operator console: docs/CONSOLE.md.',
    )
    .usage('--config F [options]')
    .option('--config <F>', 'the configuration (required)')
    .addOption(keystoreOption())
    .option('--port <N>', 'port on 127.0.0.1 (0: any free port)', '8080')
    .option(
      '--workers <N>',
      'worker threads for unwrap, signature checks and Bundle reading (default: one per core; 0: none)',
    )
    .addOption(outOption())
    .option('--stop-timeout <S>', 'seconds to finish or park work in hand on SIGTERM (1–3600)', '10')
    .option('--mesh', "also poll the gateway's MESH mailboxes every mesh.pollIntervalSeconds", false)
    .addOption(repeatable('--allowed-host <H:P>', 'another Host header to accept'))
    .option('--headers-timeout <S>', 'seconds to receive the headers (default 10)')
    .option('--request-timeout <S>', 'seconds to receive a request (default 60)')
    .option('--keep-alive-timeout <S>', 'seconds an idle keep-alive connection stays (default 5)')
    .option('--idle-timeout <S>', 'seconds a silent socket stays (default 30)')
    .option('--max-connections <N>', 'open connections at most (default 256)')
    .option('--max-backlog-messages <N>', 'queued messages before 503 (default 1000)')
    .option('--max-backlog-bytes <N>', 'queued bytes before 503 (default 256 MiB)')
    .option('--max-inflight-bytes <N>', 'body bytes being read at once before 503 (default 64 MiB)')
    .option(
      '--max-backlog-share <F>',
      'the fraction of each backlog bound one sender may hold before its own 503 (default 0.25; 1 = off)',
    )
    .option('--console', 'the operator console at /console/')
    .option(
      '--operator-token-file <F>',
      "the console's operator token: read from F, or generated into F (mode 0600);\n" +
        'without it the generated token is shown once on stderr',
    )
    .action(async (opts: ServeOptions) => setExitCode(await serveCommand(opts, write)));

  program
    .command('mesh')
    .summary('MESH mailboxes')
    .usage('poll [options]')
    .command('poll')
    .summary("one pass over the gateway's MESH mailboxes: download, check, deliver, answer")
    .description(
      'One pass over the gateway\'s MESH mailboxes (config "mesh"): download, check, deliver, answer\n' +
        'through MESH; one JSON line per MESH message.',
    )
    .usage('--config F [options]')
    .option('--config <F>', 'the configuration, with its "mesh" section (required)')
    .addOption(keystoreOption())
    .addOption(outOption())
    .action(async (opts: { config?: string; keystore: string; out: string }) =>
      setExitCode(await meshPoll(opts, write)),
    );

  const dlq = program
    .command('dlq')
    .summary('dead letters: list, show, redrive')
    .usage('list|show|redrive [options]');
  operatorOptions(
    dlq
      .command('list')
      .summary('dead letters with their reasons (never their bodies)')
      .option('--stage <S>', `only this stage's: ${STAGES.join(', ')}`)
      .option('--json', 'one JSON object per line'),
  ).action(async (opts: OperatorOptions & { stage?: string; json?: boolean }) => {
    if (opts.stage !== undefined && !(STAGES as readonly string[]).includes(opts.stage)) {
      throw new UsageError(`--stage must be one of ${STAGES.join(', ')}`);
    }
    setExitCode(
      await dlqList(operatorTarget(opts), opts.stage as StageName | undefined, opts.json === true, write),
    );
  });
  operatorOptions(
    dlq
      .command('show')
      .summary('one dead letter: stage, reason, receives, size and its audit trail')
      .argument('<MESSAGE_ID>', 'the message id dlq list shows'),
  ).action(async (messageId: string, opts: OperatorOptions) =>
    setExitCode(await dlqShow(operatorTarget(opts), messageId, write)),
  );
  operatorOptions(
    dlq
      .command('redrive')
      .summary('send dead letters back to their queue, audited as the operator’s')
      .description(
        "Send dead letters back to their stage's queue (one message, a stage's or all), audited as the\n" +
          "operator's. Embedded: they run again here, with their original receipt time (--config needed);\n" +
          'one JSON line per message with its outcome. --aws-outputs: the deployed stack runs them.',
      )
      .argument('<TARGET>', `a stage (${STAGES.join(', ')}), all, or a message id`)
      .option('--config <F>', 'the configuration (required without --aws-outputs)')
      .addOption(keystoreOption()),
  ).action(async (what: string, opts: OperatorOptions & { config?: string; keystore: string }) => {
    const runtime = opts.config
      ? () => ({
          config: loadConfigFile(opts.config!),
          keys: new SoftwareKeyService(readKeystore(opts.keystore)),
        })
      : undefined;
    setExitCode(await dlqRedrive(operatorTarget(opts), what, runtime, write));
  });

  operatorOptions(
    program
      .command('trace')
      .summary("a message's path through the audit trail, and its outcome")
      .argument('<TRACKING_ID>', 'the tracking (trace) id'),
  ).action(async (traceId: string, opts: OperatorOptions) =>
    setExitCode(await trace(operatorTarget(opts), traceId, write)),
  );

  program
    .command('audit')
    .summary('the hash-chained audit trail')
    .usage('verify [options]')
    .command('verify')
    .summary('prove the audit trail complete and unaltered, or name its first bad entry')
    .description(
      'Prove the hash-chained audit trail complete and unaltered against its signed checkpoints, or\n' +
        'name the first entry that is not (exit 0 proven, 1 broken); docs/AUDIT.md.',
    )
    .addOption(outOption())
    .option('--keystore <F>', 'the keystore whose response-signing keys signed the checkpoints')
    .addOption(awsOutputsOption())
    .option('--json', 'the report as JSON')
    .action(async (opts: { out: string; keystore?: string; awsOutputs?: string; json?: boolean }) => {
      const { auditVerify, awsAuditVerify } = await import('./audit.js');
      setExitCode(
        opts.awsOutputs
          ? await awsAuditVerify(opts.awsOutputs, opts.json === true, write)
          : auditVerify(opts.out, opts.keystore, opts.json === true, write),
      );
    });

  program
    .command('explain')
    .summary('why a message would be delivered or rejected: every check of every stage')
    .description(
      'Why a message would be delivered or rejected: every check of every stage, the policy rule or\n' +
        'deny-by-default, what would have to change. Never delivers, consumes a jti, signs or writes state.',
    )
    .usage(
      'NAME.jwe... | --sealed F [--credential F] --config F [options]\n' +
        '       itk3 explain --claims F|JSON (--routing JSON | --from ODS --to ODS --event EVT) --config F [options]',
    )
    .argument('[NAME.jwe...]', 'sealed messages, each with its credential NAME.jwt beside it')
    .option('--config <F>', 'the configuration (required)')
    .option(
      '--keystore <F>',
      `the keystore (default ${DEFAULT_KEYSTORE} if present; without: up to authorise)`,
    )
    .option('--sealed <F>', 'one sealed message')
    .option('--credential <F>', 'its credential (default: NAME.jwt beside it)')
    .option('--claims <F|JSON>', "a credential's claims instead of a sealed message")
    .option('--routing <JSON>', 'with --claims: {"from","to","event"[,"id"]}')
    .option('--from <ODS>', 'with --claims: the routing sender')
    .option('--to <ODS>', 'with --claims: the routing recipient')
    .option('--event <EVT>', 'with --claims: the routing event')
    .option('--id <ID>', 'with --claims: the routing message id')
    .option('--kid <K>', 'with --claims: the recipient key id the JWE would name')
    .option('--at <TIME>', 'judge as if received at this ISO time (default now)')
    .option('--json', 'the explanation as JSON')
    .action(async (files: string[], opts: ExplainOptions) =>
      setExitCode(await explainCommand(files, opts, write)),
    );

  program
    .command('codes')
    .summary('every rejection code: ITK3 code, stage, meaning, what to change')
    .option('--markdown', 'as the Markdown table of docs/REJECTION-CODES.md')
    .option('--json', 'as JSON')
    .action((opts: { markdown?: boolean; json?: boolean }) => setExitCode(codesCommand(opts, write)));

  const config = program
    .command('config')
    .summary('configuration documents')
    .usage('validate FILE [--keystore F] | schema');
  config
    .command('validate')
    .summary('validate a configuration document, listing every problem')
    .usage('FILE [--keystore F]')
    .argument('<FILE>', 'the configuration document')
    .option('--keystore <F>', 'also: every recipient and response-signing kid must be in this keystore')
    .action((file: string, opts: { keystore?: string }) => setExitCode(configValidate(file, opts, write)));
  config
    .command('schema')
    .summary("print the configuration's JSON Schema")
    .action(() => setExitCode(configSchema(write)));

  for (const command of allCommands(program)) {
    command.exitOverride((error) => {
      throw commanderFailure(error, command);
    });
  }
  return program;
}

interface DemoCommandOptions {
  out?: string;
  fast?: boolean;
  emulator?: string;
  localState?: boolean;
  mesh?: boolean;
}

async function demoCommand(values: DemoCommandOptions, write: Write): Promise<number> {
  if (values.emulator && !/^http:\/\/127\.0\.0\.1:\d{2,5}$/.test(values.emulator)) {
    throw new UsageError('--emulator must be a loopback endpoint such as http://127.0.0.1:4566');
  }
  const result = await runDemo({
    write,
    ...(values.emulator
      ? { emulator: { endpoint: values.emulator, localState: values.localState === true } }
      : {}),
    ...(values.out ? { out: values.out } : {}),
    ...(values.fast ? { recipientModulus: 2048 } : {}),
  });
  if (!values.mesh) return result.allAsExpected ? 0 : 1;
  const mesh = await runMeshDemo({
    out: join(result.baseDir, 'mesh'),
    ...(process.env.ITK3_MESH_SANDBOX ? { sandbox: process.env.ITK3_MESH_SANDBOX } : {}),
    ...(process.env.ITK3_MESH_SHARED_KEY ? { sandboxSharedKey: process.env.ITK3_MESH_SHARED_KEY } : {}),
    write,
  });
  return result.allAsExpected && mesh.status !== 'failed' ? 0 : 1;
}

/** `--out` and `--aws-outputs` of the operator commands (dlq, trace). */
interface OperatorOptions {
  out: string;
  awsOutputs?: string;
}

function operatorOptions(command: Command): Command {
  return command.addOption(outOption()).addOption(awsOutputsOption());
}

function operatorTarget(opts: OperatorOptions): OperatorTarget {
  return { out: opts.out, awsOutputs: opts.awsOutputs };
}

function keystoreOption(): Option {
  return new Option('--keystore <F>', 'the keystore').default(DEFAULT_KEYSTORE);
}

function outOption(): Option {
  return new Option('--out <DIR>', "the run's folder (its state in DIR/state.db)").default(DEFAULT_OUT);
}

function awsOutputsOption(): Option {
  return new Option(
    '--aws-outputs <F>',
    'work on a deployed stack instead, F being its cdk deploy --outputs-file JSON',
  ).conflicts('out');
}

/** An option that may be given several times; its value is the list, in order. */
function repeatable(flags: string, description: string): Option {
  return new Option(flags, `${description} (repeatable)`).argParser(collect);
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function allCommands(command: Command): Command[] {
  return [command, ...command.commands.flatMap(allCommands)];
}

/** The commands a help page lists: every runnable command under this one, subcommands included. */
function leafCommands(command: Command): Command[] {
  const leaves = command.commands.flatMap((c) => (c.commands.length > 0 ? leafCommands(c) : [c]));
  if (command.parent) return leaves;
  // The overview also names `help`, the one command commander adds.
  return [...leaves, ...new Help().visibleCommands(command).filter((c) => c.name() === 'help')];
}

/** `dlq show <MESSAGE_ID>`: a command's path below the program, then its arguments. */
function subcommandTerm(command: Command): string {
  const path: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) path.unshift(c.name());
  if (path.length === 0) path.push(command.name()); // `help`, which commander keeps outside the tree
  const args = command.registeredArguments.map((a) => {
    const name = `${a.name()}${a.variadic ? '...' : ''}`;
    return a.required ? `<${name}>` : `[${name}]`;
  });
  return [...path, ...args].join(' ');
}

/** `itk3 keys init`: the full name of a command, for messages. */
function commandName(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * What commander reports (help shown, unknown command or option, missing or extra argument) as
 * this command line reports it: help ends the run; anything else is one `error:` line with the
 * command's usage, exit 2.
 */
function commanderFailure(error: CommanderError, command: Command): Error {
  if (error.code === 'commander.helpDisplayed' || error.code === 'commander.help') {
    return new HelpShown(error.exitCode === 0 ? 0 : 2);
  }
  let reason = error.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ');
  if (error.code === 'commander.unknownCommand') {
    const suggestion = / \(Did you mean .*\?\)$/.exec(reason)?.[0] ?? '';
    reason = `unknown command "${command.args[0]}"${suggestion}`;
  }
  if (error.code === 'commander.excessArguments') {
    const extra = command.args.slice(command.registeredArguments.length);
    reason = `unexpected argument${extra.length === 1 ? '' : 's'} ${extra.map((a) => `'${a}'`).join(' ')}`;
  }
  const usage = command.parent
    ? `usage: ${commandName(command)} ${command.usage()}`
    : `try: ${commandName(command)} help`;
  return new UsageError(`${reason} (${usage})`);
}
