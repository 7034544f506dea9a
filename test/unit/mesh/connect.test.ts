/**
 * MESH connections from the configuration: secrets by reference (environment variable or file),
 * certificates as files, and errors that name the reference but never a value.
 */
import { inspect } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedConfig } from '../../../lib/config/load.js';
import { MeshConfigError, meshClientsFromConfig, resolveSecret } from '../../../lib/mesh/index.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { configWith, testWorld } from '../../support/world.js';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});

const SECRET = 'pa55-w0rd-never-printed';

function meshConfig(url = 'http://127.0.0.1:47701'): LoadedConfig {
  return configWith(world, {
    mesh: {
      url,
      sharedKey: { env: 'MESH_SHARED' },
      mailboxes: [{ mailbox: 'X26ABC2', password: { file: '/secrets/x26abc2' }, recipients: ['A83627'] }],
    },
  });
}

describe('MESH connections from the configuration', () => {
  it('resolves an environment variable and a file (trailing newline removed)', () => {
    const sources = { env: { MESH_SHARED: SECRET }, readFile: () => `${SECRET}\n` };
    expect(resolveSecret({ env: 'MESH_SHARED' }, 'mesh.sharedKey', sources)).toBe(SECRET);
    expect(resolveSecret({ file: '/secrets/x' }, 'mesh.sharedKey', sources)).toBe(SECRET);
  });

  it('names a missing variable or unreadable file, never a value', () => {
    const missing = { env: {}, readFile: () => SECRET };
    expect(() => resolveSecret({ env: 'MESH_SHARED' }, 'mesh.sharedKey', missing)).toThrow(
      new MeshConfigError('mesh.sharedKey: environment variable MESH_SHARED is not set'),
    );
    const unreadable = {
      env: { MESH_SHARED: SECRET },
      readFile: () => {
        throw Object.assign(new Error(`EACCES ${SECRET}`), { code: 'EACCES' });
      },
    };
    let error: unknown;
    try {
      meshClientsFromConfig(meshConfig(), unreadable);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(MeshConfigError);
    expect((error as Error).message).toBe('mesh.mailboxes.0.password: cannot read /secrets/x26abc2 (EACCES)');
    expect(inspect(error)).not.toContain(SECRET);
  });

  it('builds one client per gateway mailbox, whose printed form holds no secret', () => {
    const clients = meshClientsFromConfig(meshConfig(), {
      env: { MESH_SHARED: SECRET },
      readFile: () => SECRET,
    });
    expect([...clients.keys()]).toEqual(['X26ABC2']);
    expect(inspect(clients, { depth: 6 })).not.toContain(SECRET);
    expect(JSON.stringify([...clients.values()])).not.toContain(SECRET);
    for (const c of clients.values()) c.close();
  });

  it('refuses a non-loopback MESH without mutual TLS', () => {
    expect(() =>
      meshClientsFromConfig(meshConfig('https://msg.intspineservices.nhs.uk'), {
        env: { MESH_SHARED: SECRET },
        readFile: () => SECRET,
      }),
    ).toThrow(/needs mutual TLS/);
  });
});
