/**
 * Child process for test/unit/runtime/worker-pool.test.ts: starts a worker pool, runs one task and
 * returns without closing it. The process must exit on its own (an idle worker holds no reference).
 */
import { WorkerPool } from '../../lib/adapters/local/worker-pool.js';
import { loadConfig } from '../../lib/config/load.js';

const keystoreFile = process.argv[2] ?? '';
const config = loadConfig(JSON.parse(process.env.ITK3_TEST_CONFIG ?? '{}'));
const pool = await WorkerPool.start({ size: 2, keystoreFile, config });
// A Bundle that is not an ITK3 message: refused, after a real round trip through a worker.
const bundle = new TextEncoder().encode('<Bundle xmlns="http://hl7.org/fhir"/>');
const refused = await pool.cpu.parseBundle(bundle, 'xml').then(
  () => false,
  () => true,
);
if (!refused) throw new Error('expected a refusal');
console.log('parsed; pool left open');
