/** Shared factories and assertions for the ITK3 tests. */
import { expect } from 'vitest';
import { Itk3ValidationError, type RejectionCode } from '../../../lib/errors.js';
import { type BuildOptions, buildItk3Message, buildItk3Object } from '../../../lib/itk3/builder.js';
import { type BundleFormat, type Itk3Message, parseBundle } from '../../../lib/itk3/parse.js';
import { type FhirObject, serialize } from '../../../lib/itk3/serialize.js';

/** A valid ITK009D message with an explicit receiver, fictitious ids. */
export function buildOptions(overrides: Partial<BuildOptions> = {}): BuildOptions {
  return {
    format: 'xml',
    event: 'ITK009D',
    senderOds: 'X26',
    receiverOds: 'A83627',
    meshMailbox: 'NOROT003',
    messageId: '0f6b1c52-7a4e-4c1e-9a53-3f2d8e1b7c01',
    bundleId: '2a9d4e61-1b3c-4d5e-8f70-9a1b2c3d4e02',
    documentId: '7c1e2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e03',
    acks: { inf: true, bus: true },
    recipientType: 'FA',
    messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1',
    senderReference: 'c3b1f0de-5a61-4b7e-9f2e-6d8c7b9a0e04',
    localExtension: 'None',
    timestamp: '2024-03-01T09:30:00+00:00',
    ...overrides,
  };
}

export function build(overrides: Partial<BuildOptions> = {}): Uint8Array {
  return buildItk3Message(buildOptions(overrides));
}

export const FORMATS: readonly BundleFormat[] = ['xml', 'json'];

/** Deep copy of a built message object, mutable for rule tests. */
export type Mutable = Record<string, unknown>;

/** The built message as a mutable object (FHIR JSON shape). */
export function messageObject(overrides: Partial<BuildOptions> = {}): Mutable {
  return structuredClone(buildItk3Object(buildOptions(overrides))) as Mutable;
}

/** Array member of an object, typed for mutation. */
export function arr(object: unknown, key: string): Mutable[] {
  const value = (object as Mutable)[key];
  if (!Array.isArray(value)) throw new Error(`no array ${key}`);
  return value as Mutable[];
}

/** Object member of an object, typed for mutation. */
export function obj(object: unknown, key: string): Mutable {
  const value = (object as Mutable)[key];
  if (typeof value !== 'object' || value === null) throw new Error(`no object ${key}`);
  return value as Mutable;
}

/** The MessageHeader resource of a message object. */
export function headerOf(message: Mutable): Mutable {
  return obj(arr(message, 'entry')[0], 'resource');
}

/** The handling sub-extensions of a message object. */
export function handlingOf(message: Mutable): Mutable[] {
  return arr(arr(headerOf(message), 'extension')[0], 'extension');
}

/** Serialise a (mutated) message object and parse it back. */
export function parseObject(message: Mutable, format: BundleFormat): Itk3Message {
  return parseBundle(serialize(message as FhirObject, format), format);
}

/** Assert that `fn` throws an Itk3ValidationError with `code`; returns it. */
export function expectCode(fn: () => unknown, code: RejectionCode): Itk3ValidationError {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected ${code}`).toBeInstanceOf(Itk3ValidationError);
  const error = thrown as Itk3ValidationError;
  expect(error.code).toBe(code);
  return error;
}

export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
export const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
