import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { meshPartnerReceive, meshPartnerSend } from '../../../lib/testkit/mesh-partner.js';

// A python without mesh-client: the partner script fails on import, as it would on any error.
const python = spawnSync('python3', ['-c', 'import mesh_client']).status === 1 ? 'python3' : undefined;

describe.skipIf(!python)('the mesh-client partner when mesh-client fails', () => {
  const access = {
    python: python!,
    url: 'http://127.0.0.1:9',
    password: 'mailbox-password-7f3a',
    sharedKey: 'shared-key-91c2',
  };

  it('names the operation and the exception, never the password, shared key or body', () => {
    const body = Buffer.from('<Bundle>patient 9434765919</Bundle>');
    let message = '';
    try {
      meshPartnerSend(access, { mailbox: 'X26ABC1', to: 'X26ABC2', body, workflowId: 'WF' });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/^mesh-client send failed: ModuleNotFoundError: No module named 'mesh_client'$/);
    for (const secret of [access.password, access.sharedKey, '9434765919', body.toString('base64')]) {
      expect(message).not.toContain(secret);
    }
  });

  it('fails a receive the same way', () => {
    expect(() => meshPartnerReceive(access, 'X26ABC3')).toThrow(
      /^mesh-client receive failed: ModuleNotFoundError/,
    );
  });
});
