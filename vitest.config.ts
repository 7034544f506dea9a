import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
    env: {
      // Tests run on Node 20 on purpose (Lambda runs 22/24); the SDK's notice about that is noise here.
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      // No CloudWatch in tests: Powertools would print EMF blobs to stdout.
      POWERTOOLS_METRICS_DISABLED: 'true',
      // Quiet stage handlers (a line per record otherwise); the log-scanning suites set DEBUG themselves.
      POWERTOOLS_LOG_LEVEL: 'SILENT',
    },
  },
});
