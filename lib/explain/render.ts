/** Plain-text rendering of an {@link Explanation} for the command line. */
import type { CheckStatus, Explanation } from './index.js';

const MARK: Record<CheckStatus, string> = {
  passed: '✓',
  failed: '✗',
  'not-reached': '·',
  skipped: '-',
};

const STAGE_STATUS: Record<CheckStatus, string> = {
  passed: 'passed',
  failed: 'FAILED',
  'not-reached': 'not reached',
  skipped: 'not run',
};

export function renderExplanation(e: Explanation): string[] {
  const lines: string[] = [];
  lines.push(
    `mode: ${e.mode === 'sealed' ? 'credential and sealed message' : 'claims and routing (no keys)'}`,
  );
  lines.push(`receipt time: ${e.receivedAt}`);
  switch (e.outcome) {
    case 'deliver':
      lines.push('result: every check passed: the message would be delivered');
      break;
    case 'authorised':
      lines.push(
        'result: authenticate and authorise would pass (decrypt and verify need the sealed message and the keystore)',
      );
      break;
    case 'reject':
      lines.push(`result: REJECTED at ${e.stage}: ${e.code} (ITK3 ${e.itk3Code})`);
      break;
    case 'error':
      lines.push(`result: could not be judged at ${e.stage}: ${e.code} (${e.detail})`);
      break;
  }
  if (e.policy?.ruleId) {
    lines.push(
      `policy: rule ${e.policy.ruleId}${e.policy.delegationId ? `, delegation grant ${e.policy.delegationId}` : ''}`,
    );
  } else if (e.policy?.denyByDefault) {
    lines.push('policy: no rule matched: deny by default');
  }
  lines.push('');
  for (const stage of e.stages) {
    lines.push(
      `${stage.stage.padEnd(13)}${STAGE_STATUS[stage.status]}${stage.note ? ` — ${stage.note}` : ''}`,
    );
    const width = Math.max(0, ...stage.checks.map((c) => c.id.length));
    for (const check of stage.checks) {
      lines.push(`  ${MARK[check.status]} ${check.id.padEnd(width)}  ${check.description}`);
      const indent = ' '.repeat(width + 6);
      if (check.code) lines.push(`${indent}${check.code} (ITK3 ${check.itk3Code}): ${check.detail}`);
      if (check.note) lines.push(`${indent}${check.note}`);
    }
  }
  if (e.toPass.length > 0) {
    lines.push('');
    lines.push('to pass:');
    for (const item of e.toPass) lines.push(`  - ${item}`);
  }
  return lines;
}
