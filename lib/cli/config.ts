/** `itk3 config validate|schema`: check a configuration document (every problem at once), or print its schema. */
import { readKeystore } from '../adapters/local/keystore.js';
import { expiredGrantWarnings, keystoreProblems } from '../config/deployment-checks.js';
import { configJsonSchema, loadConfigFile } from '../config/load.js';
import { ConfigError } from '../errors.js';

type Write = (line: string) => void;

export function configSchema(write: Write): number {
  write(JSON.stringify(configJsonSchema(), null, 2));
  return 0;
}

export function configValidate(file: string, values: { keystore?: string }, write: Write): number {
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
