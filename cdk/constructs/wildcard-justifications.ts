import { type IAspect, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { IConstruct } from 'constructs';

/** One wildcard resource the pipeline needs, with the actions allowed on it and why. */
interface Justification {
  /** The resource as written in the policy (may hold tokens). */
  readonly resource: string;
  /** Actions a statement on that resource may allow. */
  readonly actions: ReadonlySet<string>;
  /** The reason recorded with the cdk-nag acknowledgement. */
  readonly reason: string;
}

interface PolicyStatementJson {
  Effect?: string;
  Action?: string | string[];
  Resource?: unknown;
}

/**
 * Acknowledges cdk-nag `AwsSolutions-IAM5` findings for wildcard resources the pipeline declared on
 * purpose — and only those.
 *
 * cdk-nag v3 needs one acknowledgement per finding id (`AwsSolutions-IAM5[Resource::<flattened>]`),
 * and the flattened form holds logical ids only known at synth. So grants declare their wildcard
 * resources here with the actions and the reason; at synth this aspect visits every IAM policy and
 * acknowledges a finding only if *every* statement that produces it allows only declared actions.
 * Any other wildcard — a new statement, an extra action — stays a finding.
 */
export class WildcardJustifications implements IAspect {
  readonly #entries: Justification[] = [];

  /**
   * Declare that statements on `resource` may allow `actions`, for `reason`.
   *
   * @example
   * ```ts
   * justifications.allow(bucket.arnForObjects('claim-check/*'), ['s3:GetObject'], 'keys are per message');
   * ```
   */
  allow(resource: string, actions: readonly string[], reason: string): void {
    this.#entries.push({ resource, actions: new Set(actions), reason });
  }

  visit(node: IConstruct): void {
    if (!(node instanceof iam.CfnPolicy)) return;
    const stack = Stack.of(node);
    const doc = stack.resolve(node.policyDocument) as { Statement?: PolicyStatementJson[] };
    const entries = this.#entries.map((e) => ({
      ...e,
      flat: flattenReference(stack.resolve(e.resource)),
    }));

    // Per flattened wildcard resource: the reason if every statement on it is justified, else null.
    const verdicts = new Map<string, string | null>();
    for (const statement of doc.Statement ?? []) {
      if (statement.Effect !== 'Allow') continue;
      const actions = toArray(statement.Action);
      for (const resource of toArray(statement.Resource)) {
        const flat = flattenReference(resource);
        if (!flat.includes('*')) continue;
        const entry = entries.find((e) => e.flat === flat && actions.every((a) => e.actions.has(a)));
        const previous = verdicts.get(flat);
        verdicts.set(flat, entry && previous !== null ? entry.reason : null);
      }
    }
    for (const [flat, reason] of verdicts) {
      if (reason) Validations.of(node).acknowledge({ id: `AwsSolutions-IAM5[Resource::${flat}]`, reason });
    }
  }
}

function toArray<T>(value: T | T[] | undefined): T[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

/**
 * A resolved CloudFormation value as one string, in the form cdk-nag's `AwsSolutions-IAM5` finding
 * ids name resources (`Resource::<flattened>`): `Fn::Join` joined, `Ref` as `<Id>`, `Fn::GetAtt` as
 * `<Id.Attr>`, `Fn::Sub`'s `${X}` as `<X>`. Written here because cdk-nag exports no helper for it,
 * and the construct uses only cdk-nag's public API (none at all at synth in a consumer's app);
 * test/cdk/wildcard-justifications.test.ts checks the ids match the packs' findings.
 */
function flattenReference(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'string') return value.replaceAll('${', '<').replaceAll('}', '>');
  if (typeof value === 'object' && value !== null) {
    const node = value as Record<string, unknown>;
    if (Array.isArray(node['Fn::Join'])) {
      const [delimiter, items] = node['Fn::Join'] as [string, unknown[]];
      return items.map(flattenReference).join(delimiter);
    }
    if (node['Fn::Sub'] !== undefined) return flattenReference(node['Fn::Sub']);
    if (Array.isArray(node['Fn::GetAtt'])) {
      const [resource, attribute] = node['Fn::GetAtt'] as [unknown, unknown];
      return `<${flattenReference(resource)}.${flattenReference(attribute)}>`;
    }
    if (node['Fn::ImportValue'] !== undefined) return flattenReference(node['Fn::ImportValue']);
    if (node.Ref !== undefined) return `<${flattenReference(node.Ref)}>`;
  }
  return JSON.stringify(value);
}
