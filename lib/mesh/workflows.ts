/**
 * MESH workflow ids per ITK3 event (ITK3.md §3): the workflow a sender must use for an event, and
 * the workflow of the ITK008M responses to it. The configuration may add pairs (`mesh.workflows`).
 */
import type { LoadedConfig } from '../config/load.js';

interface WorkflowPair {
  event: string;
  send: readonly string[];
  ack?: string;
}

/** ITK3.md §3 (ITK011M NEMS and ITK012M pathology have no send/ack pair and are left out). */
const BUILT_IN_WORKFLOWS: readonly WorkflowPair[] = [
  { event: 'ITK003D', send: ['TOC_FHIR_IP_DISCH'] },
  { event: 'ITK004D', send: ['TOC_FHIR_MH_DISCH'] },
  { event: 'ITK005D', send: ['TOC_FHIR_EC_DISCH'] },
  { event: 'ITK006D', send: ['TOC_FHIR_OP_ATTEN'] },
  { event: 'ITK007C', send: ['GPFED_CONSULT_REPORT', 'GPCONNECT_SEND_DOCUMENT'] },
  { event: 'ITK009D', send: ['DIGMED_FLU_VAC'] },
  { event: 'ITK010D', send: ['DIGMED_EMG_MED'] },
  { event: 'ITK013D', send: ['DIGMED_MINOR_ILLNESS_PEM'] },
  { event: 'ITK014M', send: ['GPCONNECT_UPDATE_RECORD'] },
];

function pairs(config: LoadedConfig): readonly WorkflowPair[] {
  return [...(config.doc.mesh?.workflows ?? []), ...BUILT_IN_WORKFLOWS];
}

/** Whether `workflowId` is a workflow a sender may use for `event`. */
export function workflowMatchesEvent(config: LoadedConfig, workflowId: string, event: string): boolean {
  return pairs(config).some((p) => p.event === event && p.send.includes(workflowId));
}

/** The workflow ITK008M responses to a message sent with `workflowId` travel with. */
export function ackWorkflowFor(config: LoadedConfig, workflowId: string): string {
  const pair = pairs(config).find((p) => p.send.includes(workflowId) && p.ack !== undefined);
  return pair?.ack ?? `${workflowId}_ACK`;
}

/** The workflow to send an event with when none is configured: its first send workflow. */
export function sendWorkflowFor(config: LoadedConfig, event: string): string | undefined {
  return pairs(config).find((p) => p.event === event)?.send[0];
}
