// Stands in for @aws-sdk/client-sqs in a bundle that leaves the SDK to the Lambda runtime (see
// runtime-require.mjs): a CommonJS module, so the bundle reads the SDK's exports from `require`.
module.exports = runtimeRequire('@aws-sdk/client-sqs');
