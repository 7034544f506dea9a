import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryAuditLog } from '../../../lib/adapters/local/memory-stores.js';

const base = { traceId: 't1', at: '2026-01-01T00:00:00.000Z', stage: 'verify', event: 'rejected' } as const;

describe('sender-controlled data in the audit', () => {
  it('drops a messageId that fails the FHIR id rule (patient data in the id)', async () => {
    const audit = new MemoryAuditLog();
    await audit.append({ ...base, messageId: 'NHS 9434765919 SMITH Jane DOB 1970-01-01' });
    expect((await audit.byTrace('t1'))[0]?.messageId).toBeUndefined();
  });

  it('keeps a valid FHIR id', async () => {
    const audit = new MemoryAuditLog();
    await audit.append({ ...base, messageId: 'abc-123.X' });
    expect((await audit.byTrace('t1'))[0]?.messageId).toBe('abc-123.X');
  });

  it('bounds the item size (600 KB id and detail)', async () => {
    const audit = new MemoryAuditLog();
    const huge = 'a'.repeat(600_000);
    await audit.append({ ...base, messageId: huge, detail: huge });
    const [entry] = await audit.byTrace('t1');
    expect(JSON.stringify(entry).length).toBeLessThan(2_000);
  });

  it('writes the audit file 0600', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'audit-')), 'audit.jsonl');
    const audit = new MemoryAuditLog({ file });
    await audit.append(base);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });
});
