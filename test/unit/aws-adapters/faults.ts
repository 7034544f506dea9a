/** SDK-shaped failures for aws-sdk-client-mock: what the real service (or the network) throws. */

/** A service error as the SDK deserialises it: `name`, `$fault`, `$metadata.httpStatusCode`. */
export function serviceError(name: string, status: number, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(`${name} (mock)`), {
    name,
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status, attempts: 3 },
    ...extra,
  });
}

/** A socket-level failure: no HTTP response at all. */
export function networkError(code = 'ECONNREFUSED'): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:4566`), { code });
}

/**
 * Commands a mocked client was sent, by name (`DecryptCommand` → `Decrypt`): what the call-counting
 * middleware (lib/adapters/aws/calls.ts) counts on a real client. aws-sdk-client-mock replaces
 * `send`, so no middleware runs under it.
 */
export function sentCommands(mock: {
  calls(): readonly { args: readonly unknown[] }[];
}): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const call of mock.calls()) {
    const name = (call.args[0] as object).constructor.name.replace(/Command$/, '');
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}
