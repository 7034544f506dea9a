/**
 * ITK3: parse, validate, respond, build, samples. The public API of `lib/itk3`.
 */
export { type BuildOptions, buildItk3Message, buildItk3Object } from './builder.js';
export {
  EVENT_SYSTEM,
  EVENTS,
  type EventInfo,
  HANDLING_EXTENSION_URL,
  RECIPIENT_TYPE_SYSTEM,
  RESPONSE_CODE_SYSTEM,
  RESPONSE_EVENT,
  RESPONSE_MESSAGE_DEFINITION,
  UNREADABLE_ID,
} from './constants.js';
export {
  type BundleFormat,
  DEFAULT_PARSE_LIMITS,
  type Itk3Handling,
  type Itk3Header,
  type Itk3Message,
  type Itk3ResponseInfo,
  messageDefinitionName,
  type ParseLimits,
  parseBundle,
} from './parse.js';
export { buildResponse, RESPONSE_CODES, type ResponseCodeInfo, type ResponseOptions } from './response.js';
export {
  fixturesDir,
  ITK3_SAMPLE_FACTS,
  LEGACY_FIXTURE_NAMES,
  loadSamples,
  projectRoot,
  type Sample,
  type SampleFacts,
} from './samples.js';
export { type FhirObject, type FhirValue, serialize } from './serialize.js';
export {
  type Itk3Validation,
  type Itk3ValidationOptions,
  type UnresolvedReferencePolicy,
  validateItk3,
} from './validate.js';
