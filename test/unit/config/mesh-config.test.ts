/**
 * The MESH parts of the configuration (issue 12): sender mailboxes, the gateway's mailboxes and
 * connection, mesh targets, rule transports and third-party mailbox grants, with every problem
 * reported at once.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../lib/config/load.js';
import type { PipelineConfigInput } from '../../../lib/config/schema.js';
import { ConfigError } from '../../../lib/errors.js';
import type { DemoWorld } from '../../../lib/testkit/world.js';
import { testWorld } from '../../support/world.js';

let world: DemoWorld;
beforeAll(async () => {
  world = await testWorld();
});

function meshDoc(): PipelineConfigInput {
  const doc = structuredClone(world.configDoc) as PipelineConfigInput;
  doc.mesh = {
    url: 'http://127.0.0.1:47701',
    sharedKey: { env: 'MESH_SHARED_KEY' },
    mailboxes: [
      { mailbox: 'X26ABC2', password: { file: '/run/secrets/mesh-x26abc2' }, recipients: ['A83627'] },
    ],
  };
  doc.senders[0]!.mesh = { mailboxes: ['X26ABC1'] };
  doc.rules[0]!.transports = ['https', 'mesh'];
  return doc;
}

function problems(input: unknown): readonly string[] {
  try {
    loadConfig(input);
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  return [];
}

describe('configuration: MESH', () => {
  it('accepts mailboxes per organisation, gateway mailboxes with secrets by reference, and defaults', () => {
    const config = loadConfig(meshDoc());
    expect(config.meshSenderByMailbox.get('X26ABC1')).toBe(config.doc.senders[0]!.ods);
    expect(config.doc.senders[0]!.mesh?.signedResponses).toBe(false);
    expect(config.doc.mesh?.pollIntervalSeconds).toBe(60);
    // Rules without `transports` keep what existed before MESH.
    expect(config.doc.rules[1]!.transports).toEqual(['https']);
    expect(config.doc.rules[0]!.meshSealed).toBe('optional');
  });

  it('accepts a MESH-only sender (no clients, no signing keys) and a mesh delivery target', () => {
    const doc = meshDoc();
    doc.senders[0] = { ...doc.senders[0]!, clients: [], signingKeys: [] };
    doc.recipients[0]!.target = { type: 'mesh', mailbox: 'X26ABC3', workflowId: 'GPFED_CONSULT_REPORT' };
    // The rule that named clients of the now MESH-only sender can no longer restrict by client.
    delete doc.rules[0]!.sender.clients;
    expect(() => loadConfig(doc)).not.toThrow();
  });

  it('reports every MESH problem at once', () => {
    const doc = meshDoc();
    doc.senders[1]!.mesh = { mailboxes: ['X26ABC1'] }; // already GP0001's
    doc.senders[2]!.clients = [];
    doc.mesh!.mailboxes.push({ mailbox: 'X26ABC1', password: { env: 'P' }, recipients: ['NOPE1'] });
    doc.mesh!.sendFrom = 'X26ABC9';
    doc.mesh!.sharedKey = 'TestKey' as never; // inline secrets are refused
    expect(problems(doc)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^mesh\.sharedKey: /),
        expect.stringMatching(/^senders\.2\.clients: a sender needs at least one client, or MESH mailboxes/),
      ]),
    );
    delete (doc.mesh as { sharedKey?: unknown }).sharedKey;
    doc.mesh!.sharedKey = { env: 'MESH_SHARED_KEY' };
    doc.senders[2]!.clients = structuredClone(world.configDoc.senders[2]!.clients);
    expect(problems(doc)).toEqual([
      'senders.1.mesh.mailboxes.0: MESH mailbox "X26ABC1" already belongs to GP0001: a mailbox speaks for one organisation (use a delegation grant for a third party\'s mailbox)',
      'mesh.mailboxes.1.mailbox: "X26ABC1" is the gateway\'s, but sender GP0001 lists it too',
      'mesh.mailboxes.1.recipients: "NOPE1" is not a configured recipient',
      'mesh.sendFrom: "X26ABC9" is not one of mesh.mailboxes',
    ]);
  });

  it('refuses a rule that accepts MESH when the gateway has no MESH connection', () => {
    const doc = structuredClone(world.configDoc) as PipelineConfigInput;
    doc.rules[0]!.transports = ['mesh'];
    expect(problems(doc)).toEqual([
      'rules.0.transports: "mesh" needs the gateway\'s MESH connection (the "mesh" section)',
    ]);
  });

  it('accepts a grant for a third-party mailbox without issuers, and refuses a grant naming neither', () => {
    const doc = meshDoc();
    const grant = {
      id: 'hub-mailbox',
      actor: 'hub-supplier',
      meshMailboxes: ['X26HUB1'],
      onBehalfOf: [world.configDoc.senders[0]!.ods],
      events: ['ITK007C'],
      expires: '2099-01-01',
    };
    doc.delegations = [grant];
    expect(() => loadConfig(doc)).not.toThrow();
    doc.delegations = [{ ...grant, meshMailboxes: undefined } as never];
    expect(problems(doc)).toEqual([
      'delegations.0.issuers: a grant names the issuers that vouch for the actor, or the MESH mailboxes it runs (meshMailboxes)',
    ]);
  });
});
