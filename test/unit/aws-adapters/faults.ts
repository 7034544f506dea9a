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
