import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runDemo } from '../../../lib/cli/demo.js';

describe('itk3 demo', () => {
  it('names the recipient key size it really generates (--fast makes RSA-2048)', async () => {
    const lines: string[] = [];
    const result = await runDemo({ recipientModulus: 2048, write: (line) => lines.push(line) });
    try {
      const keyLine = lines.find((l) => l.startsWith('generating keys'));
      expect(keyLine).toContain('RSA-2048');
      expect(keyLine).not.toContain('RSA-4096');
      expect(result.allAsExpected).toBe(true);
    } finally {
      rmSync(result.baseDir, { recursive: true, force: true });
    }
  });
});
