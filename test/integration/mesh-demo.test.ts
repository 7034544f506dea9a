/**
 * `itk3 demo --mesh`, the user's view of MESH: the demo starts NHS England's MESH sandbox from the
 * venv scripts/mesh-sandbox.sh installed (or uses a running one), sends the consultation report
 * with mesh-client, polls with the gateway, shows the byte-identical delivery and the verified
 * ITK008M 20013, and stops the sandbox it started. Without the sandbox: one line and a pass.
 */
import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runMeshDemo } from '../../lib/cli/demo-mesh.js';
import { projectRoot } from '../../lib/itk3/samples.js';
import { makeTempDir, removeTempDirs } from '../support/world.js';
import { alive, describeWithMeshSandbox, MESH_SHARED_KEY } from './support/mesh.js';

const VENV = join(projectRoot(), '.mesh/venv');

afterAll(removeTempDirs);

describe('itk3 demo --mesh without the sandbox', () => {
  it('says in one line that the MESH part is skipped and how to install it, and passes', async () => {
    const lines: string[] = [];
    const result = await runMeshDemo({
      out: makeTempDir('itk3-mesh-demo-none-'),
      meshDir: join(makeTempDir('itk3-no-mesh-'), '.mesh'),
      write: (l) => lines.push(l),
    });
    expect(result.status).toBe('skipped');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^MESH part skipped: .*scripts\/mesh-sandbox\.sh install/);
  });
});

describeWithMeshSandbox('itk3 demo --mesh on NHS England’s sandbox', (url) => {
  it('starts its own sandbox, sends with mesh-client, delivers byte-identical, gets 20013, stops the sandbox', async () => {
    const lines: string[] = [];
    const result = await runMeshDemo({
      out: makeTempDir('itk3-mesh-demo-own-'),
      write: (l) => lines.push(l),
    });
    const text = lines.join('\n');
    expect(result, text).toMatchObject({ status: 'passed', sender: 'mesh-client' });
    expect(result.startedSandbox!.url).not.toBe(url);
    expect(alive(result.startedSandbox!.pid)).toBe(false);
    expect(text).toContain("with NHS England's mesh-client");
    expect(text).toContain('byte-identical to what the GP sent');
    expect(text).toMatch(/ITK008M 20013 for MessageHeader \S+, signature verified/);
  });

  it('uses the running sandbox named by ITK3_MESH_SANDBOX and leaves it running', async () => {
    const lines: string[] = [];
    const result = await runMeshDemo({
      out: makeTempDir('itk3-mesh-demo-shared-'),
      sandbox: url,
      sandboxSharedKey: MESH_SHARED_KEY,
      write: (l) => lines.push(l),
    });
    expect(result, lines.join('\n')).toMatchObject({ status: 'passed', sender: 'mesh-client' });
    expect(result.startedSandbox).toBeUndefined();
    expect((await fetch(`${url}/health`)).ok).toBe(true);
  });

  it('without mesh-client in the venv, the GP system uses the project’s own client and says so', async () => {
    // A venv with the sandbox's server but no Python (so no mesh-client to import).
    const meshDir = join(makeTempDir('itk3-mesh-demo-noclient-'), '.mesh');
    mkdirSync(join(meshDir, 'venv/bin'), { recursive: true });
    symlinkSync(join(VENV, 'bin/uvicorn'), join(meshDir, 'venv/bin/uvicorn'));
    expect(existsSync(join(meshDir, 'venv/bin/python'))).toBe(false);
    const lines: string[] = [];
    const result = await runMeshDemo({
      out: makeTempDir('itk3-mesh-demo-fallback-'),
      meshDir,
      write: (l) => lines.push(l),
    });
    expect(result, lines.join('\n')).toMatchObject({ status: 'passed', sender: 'project-client' });
    expect(lines.join('\n')).toContain('mesh-client is not installed in');
    expect(lines.join('\n')).toContain("with the project's MESH client");
  });
});
