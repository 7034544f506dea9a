/** A small valid configuration document for the integration tests (provisioner, ports from env). */
import { generateKeyPairSync } from 'node:crypto';
import { type LoadedConfig, loadConfig } from '../../../lib/config/load.js';

function publicEcJwk(kid: string): Record<string, string> {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  return { kty: 'EC', crv: 'P-256', x: String(jwk.x), y: String(jwk.y), kid, alg: 'ES256' };
}

/**
 * Two recipients (one with two keys, as during a rotation, one kid containing a `.`) and a
 * response-signing key.
 */
export function testConfig(): LoadedConfig {
  return loadConfig({
    audience: 'https://itk3.example.test/messages',
    gatewayOds: 'GW001',
    responseSigning: { kid: 'gw-response-1' },
    unauthenticatedResponseTarget: { type: 'folder', path: 'responses/unauthenticated' },
    issuers: [
      {
        id: 'nhs-test',
        issuer: 'https://issuer.example.test',
        organisations: ['SND01'],
        keys: [publicEcJwk('iss-1')],
      },
    ],
    senders: [
      {
        ods: 'SND01',
        clients: [{ issuer: 'nhs-test', sub: 'client-1' }],
        signingKeys: [publicEcJwk('snd-1')],
        responseTarget: { type: 'folder', path: 'responses/SND01' },
      },
    ],
    recipients: [
      {
        ods: 'RCP01',
        keys: [{ kid: 'rcp01-2025' }, { kid: 'rcp01.2026' }],
        target: { type: 'folder', path: 'deliveries/RCP01' },
      },
      {
        ods: 'RCP02',
        keys: [{ kid: 'rcp02-2025' }],
        target: { type: 's3', bucket: 'rcp02-inbox', prefix: 'in/' },
      },
    ],
    rules: [{ id: 'r1', sender: { ods: 'SND01' }, event: 'ITK007C', recipients: ['RCP01', 'RCP02'] }],
  });
}
