/** MESH transport: the port, its HTTP adapter, the inbound poller (docs/MESH.md). */

export {
  attestationKid,
  attestMeshFacts,
  MESH_ATTESTATION_ATTRIBUTE,
  MESH_ATTESTATION_TYP,
  meshFactsFrom,
  verifyMeshAttestation,
} from './attestation.js';
export {
  MESH_AUTH_SCHEME,
  MESH_MAX_SKEW_MINUTES,
  MeshTokenSource,
  meshAuthorization,
  meshTimestamp,
} from './auth.js';
export type * from './client.js';
export { meshAttester, meshClientsFromConfig, resolveSecret, sendingMailbox } from './connect.js';
export { MeshDeliverer } from './deliverer.js';
export * from './errors.js';
export { attachMesh, type MeshGateway } from './gateway.js';
export { gunzipBounded, readBounded } from './gunzip.js';
export { HttpMeshClient } from './http-client.js';
export { MESH_DEDUPE_SECONDS, onceAcrossCrashes } from './once.js';
export {
  isLoopbackHost,
  type MeshConnection,
  type MeshConnectionInput,
  meshConnection,
  Secret,
} from './options.js';
export {
  attributesOf,
  type MeshPollerPorts,
  type MeshPollOptions,
  type MeshPollSummary,
  pollMailbox,
} from './poller.js';
export { ackWorkflowFor, BUILT_IN_WORKFLOWS, isKnownWorkflow, workflowMatchesEvent } from './workflows.js';
