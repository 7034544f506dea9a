/**
 * ITK3: parse, validate, respond, build, samples. The public API of `lib/itk3`.
 */
export { type BuildOptions, buildItk3Message } from './builder.js';
export { type Itk3Message, parseBundle } from './parse.js';
export { fixturesDir, ITK3_SAMPLE_FACTS, loadSamples, projectRoot, type Sample } from './samples.js';
export { type UnresolvedReferencePolicy, validateItk3 } from './validate.js';
