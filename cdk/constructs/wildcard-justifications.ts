import { type IAspect, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference.js';
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
      flat: flattenCfnReference(stack.resolve(e.resource)),
    }));

    // Per flattened wildcard resource: the reason if every statement on it is justified, else null.
    const verdicts = new Map<string, string | null>();
    for (const statement of doc.Statement ?? []) {
      if (statement.Effect !== 'Allow') continue;
      const actions = toArray(statement.Action);
      for (const resource of toArray(statement.Resource)) {
        const flat = flattenCfnReference(resource);
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
