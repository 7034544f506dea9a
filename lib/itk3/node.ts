/**
 * One read-only view over FHIR XML element trees and FHIR JSON values, so the header walk is
 * written once. Every accessor is total: a wrong type or a missing element gives `undefined` or
 * an empty list, never a throw, so hostile shapes cannot escape as unclassified errors.
 */
import type { XmlElement } from './xml.js';

/** A FHIR element (XML element or JSON value). */
export interface FhirNode {
  /** Which representation this node views. */
  readonly format: 'xml' | 'json';
  /** Child elements called `name`; a JSON array is flattened, as FHIR XML repeats elements. */
  children(name: string): FhirNode[];
  /** First child element called `name`. */
  first(name: string): FhirNode | undefined;
  /** True when `name` is given as a list: a JSON array (never for XML, which repeats elements). */
  isList(name: string): boolean;
  /** A primitive string value: XML `value` attribute, JSON string. */
  str(): string | undefined;
  /** A primitive boolean value: XML `value` of exactly `true`/`false`, JSON boolean. */
  bool(): boolean | undefined;
  /** `url` and friends: an XML attribute, a JSON string member. */
  attr(name: string): string | undefined;
  /** Names of the child elements present (JSON: member names). */
  names(): string[];
  /**
   * The resource held by this node: for an XML `<resource>` wrapper its single child element, for
   * a JSON object itself with its `resourceType`.
   */
  resource(): { type: string; node: FhirNode } | undefined;
}

/** View over a kept XML element. */
export function xmlNode(element: XmlElement): FhirNode {
  return new XmlNode(element);
}

/** View over a parsed JSON value. */
export function jsonNode(value: unknown): FhirNode {
  return new JsonNode(value);
}

class XmlNode implements FhirNode {
  readonly format = 'xml';

  constructor(private readonly element: XmlElement) {}

  children(name: string): FhirNode[] {
    const out: FhirNode[] = [];
    for (const child of this.element.children) if (child.name === name) out.push(new XmlNode(child));
    return out;
  }

  first(name: string): FhirNode | undefined {
    const child = this.element.children.find((c) => c.name === name);
    return child === undefined ? undefined : new XmlNode(child);
  }

  isList(): boolean {
    return false;
  }

  str(): string | undefined {
    return this.attr('value');
  }

  bool(): boolean | undefined {
    const value = this.attr('value');
    if (value === 'true') return true;
    if (value === 'false') return false;
    return undefined;
  }

  attr(name: string): string | undefined {
    return Object.hasOwn(this.element.attrs, name) ? this.element.attrs[name] : undefined;
  }

  names(): string[] {
    return [...new Set(this.element.children.map((c) => c.name))];
  }

  resource(): { type: string; node: FhirNode } | undefined {
    // A resource wrapper must hold exactly one element: the resource.
    if (this.element.children.length !== 1) return undefined;
    const inner = this.element.children[0];
    return inner === undefined ? undefined : { type: inner.name, node: new XmlNode(inner) };
  }
}

class JsonNode implements FhirNode {
  readonly format = 'json';

  constructor(private readonly value: unknown) {}

  private member(name: string): unknown {
    const value = this.value;
    if (!isObject(value) || !Object.hasOwn(value, name)) return undefined;
    return value[name];
  }

  children(name: string): FhirNode[] {
    const member = this.member(name);
    if (member === undefined || member === null) return [];
    if (Array.isArray(member)) return member.map((item) => new JsonNode(item));
    return [new JsonNode(member)];
  }

  first(name: string): FhirNode | undefined {
    return this.children(name)[0];
  }

  isList(name: string): boolean {
    return Array.isArray(this.member(name));
  }

  str(): string | undefined {
    return typeof this.value === 'string' ? this.value : undefined;
  }

  bool(): boolean | undefined {
    return typeof this.value === 'boolean' ? this.value : undefined;
  }

  attr(name: string): string | undefined {
    const member = this.member(name);
    return typeof member === 'string' ? member : undefined;
  }

  names(): string[] {
    // `_value` style members carry primitive extensions in FHIR JSON; they are not elements.
    return isObject(this.value) ? Object.keys(this.value).filter((k) => !k.startsWith('_')) : [];
  }

  resource(): { type: string; node: FhirNode } | undefined {
    const type = this.attr('resourceType');
    return type === undefined ? undefined : { type, node: this };
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
