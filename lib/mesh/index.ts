/** MESH transport: the port, its HTTP adapter, the inbound poller (docs/MESH.md). */

export {
  attestMeshFacts,
  MESH_ATTESTATION_ATTRIBUTE,
  meshFactsFrom,
  verifyMeshAttestation,
} from './attestation.js';
export { MESH_MAX_SKEW_MINUTES, MeshTokenSource, meshAuthorization, meshTimestamp } from './auth.js';
export type * from './client.js';
export { meshAttester, meshClientsFromConfig, resolveSecret } from './connect.js';
export { MeshDeliverer } from './deliverer.js';
export * from './errors.js';
export { attachMesh, type MeshGateway } from './gateway.js';
export { gunzipBounded, readBounded } from './gunzip.js';
export { HttpMeshClient } from './http-client.js';
export { onceAcrossCrashes } from './once.js';
export { isLoopbackHost, meshConnection, Secret } from './options.js';
export { type MeshPollerPorts, type MeshPollSummary, pollMailbox } from './poller.js';
