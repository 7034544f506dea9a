import { ConfigError } from '../errors.js';
import { ENV } from '../infra/definitions.js';
import { type LoadedConfig, loadConfig, loadConfigFile } from './load.js';

/**
 * The JSON text of the validated configuration, set as a global by the `index.mjs` the CDK construct
 * writes beside each handler bundle (cdk/constructs/pipeline-function.ts, `handlerWrapper`), so a
 * deployed function carries the exact document checked at synth.
 */
declare const __ITK3_CONFIG__: string | undefined;

let cached: LoadedConfig | undefined;

/**
 * The configuration of a deployed or emulator-mode function: the bundled document, else
 * `ITK3_CONFIG_JSON`, else the file named by `ITK3_CONFIG_FILE`. Parsed once per container.
 */
export function configFromEnvironment(env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  if (cached) return cached;
  const bundled = typeof __ITK3_CONFIG__ === 'string' ? __ITK3_CONFIG__ : undefined;
  const json = bundled ?? env[ENV.configJson];
  if (json !== undefined) {
    let doc: unknown;
    try {
      doc = JSON.parse(json);
    } catch {
      throw new ConfigError(['bundled configuration is not valid JSON']);
    }
    cached = loadConfig(doc);
    return cached;
  }
  const file = env[ENV.configFile];
  if (file) {
    cached = loadConfigFile(file);
    return cached;
  }
  throw new ConfigError([
    `no configuration: set ${ENV.configJson} or ${ENV.configFile}, or bundle one with the CDK construct`,
  ]);
}

/** Test hook: forget the cached configuration. */
export function resetConfigCache(): void {
  cached = undefined;
}
