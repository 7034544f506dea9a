/**
 * `npm run bench` refuses a part or size class it does not know, before generating anything: a typo
 * in `--skip` would otherwise run the (minutes-long) part it meant to leave out.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function bench(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'scripts/bench/run.ts', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
}

describe('bench arguments', () => {
  it('an unknown --skip part exits 2 naming it and the known parts', () => {
    const run = bench('--skip', 'bundle,emulator');
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('"bundle"');
    expect(run.stderr).toContain('recipient-keys');
    expect(run.stderr).not.toContain('generating the world');
  });

  it('an unknown --sizes class exits 2', () => {
    const run = bench('--sizes', 'small,1mb');
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('"1mb"');
  });

  it('--help lists every part --skip takes', () => {
    const run = bench('--help');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('--skip floor,embedded,recipient-keys,close,pool,durable,emulator,bundles');
    expect(run.stdout).toContain('--sizes small,1MB,5MB');
  });
});
