/**
 * Emulator mode keeps draining through a lost emulator connection (issue 10, item 7): the event
 * source retries with bounded exponential back-off, says so on stderr, and gives up clearly when the
 * budget is spent. No emulator: a loopback port with nothing listening refuses every connection,
 * and a bare HTTP listener opened on that port later stands for the emulator coming back.
 */
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { SQSClient } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  connectionLossCode,
  EmulatorUnreachableError,
  SqsEventSource,
  type SqsEventSourceOptions,
} from '../../../lib/adapters/aws/sqs-event-source.js';
import { reconnectFromEnv } from '../../../lib/runtime/emulator.js';

/** A loopback port with nothing listening on it (connections are refused). */
async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function sourceOn(port: number, options: Partial<SqsEventSourceOptions> = {}) {
  const sqs = new SQSClient({
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1, // the SDK's own retries would only slow the test down
  });
  const lines: string[] = [];
  const source = new SqsEventSource(sqs, {
    stage: 'authorise',
    queueUrl: `http://127.0.0.1:${port}/000000000000/itk3-test-authorise`,
    queueArn: 'arn:aws:sqs:us-east-1:000000000000:itk3-test-authorise',
    batchSize: 10,
    warn: (line) => lines.push(line),
    ...options,
  });
  return { source, lines, sqs };
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
});

describe('SqsEventSource: a lost emulator connection', () => {
  it('retries a refused connection with growing waits, then gives up clearly', async () => {
    const port = await closedPort();
    const { source, lines } = sourceOn(port, {
      reconnect: { budgetMs: 1_000, initialDelayMs: 50, maxDelayMs: 400 },
    });
    const started = Date.now();
    const failure = await source.pollOnce(async () => undefined).catch((e: unknown) => e);
    const elapsed = Date.now() - started;

    expect(failure).toBeInstanceOf(EmulatorUnreachableError);
    const message = (failure as Error).message;
    expect(message).toMatch(/emulator unreachable \(ECONNREFUSED\)/);
    expect(message).toMatch(/at authorise ReceiveMessage; giving up the drain \(budget 1 s\)/);
    // Waits of 50, 100, 200 and 400 ms (doubling, capped) fit the budget; a fifth 400 would not.
    const attempts = Number(/after (\d+) attempts/.exec(message)?.[1]);
    expect(attempts).toBe(5);
    expect(elapsed).toBeGreaterThanOrEqual(700);
    expect(elapsed).toBeLessThan(3_000);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      /emulator connection lost \(ECONNREFUSED\) at authorise ReceiveMessage; retrying/,
    );
    expect(lines[1]).toBe(`itk3: ${message}`);
  });

  it('goes on draining when the emulator comes back within the budget', async () => {
    const port = await closedPort();
    const { source, lines } = sourceOn(port, {
      reconnect: { budgetMs: 10_000, initialDelayMs: 50, maxDelayMs: 200 },
    });
    // The "emulator" returns after ~300 ms: an empty SQS JSON answer (no messages).
    setTimeout(() => {
      const server = createHttpServer((req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        res.end('{}');
      });
      servers.push(server);
      server.listen(port, '127.0.0.1');
    }, 300);
    const received = await source.pollOnce(async () => undefined);
    expect(received).toBe(0);
    expect(lines[0]).toMatch(/connection lost \(ECONNREFUSED\)/);
    expect(lines.at(-1)).toMatch(/emulator connection restored \(authorise ReceiveMessage, attempt \d+\)/);
  });

  it('says it on stderr by default', async () => {
    const port = await closedPort();
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      const { source } = sourceOn(port, {
        warn: undefined,
        reconnect: { budgetMs: 100, initialDelayMs: 40, maxDelayMs: 40 },
      });
      await expect(source.depth()).rejects.toThrow(/giving up the drain/);
    } finally {
      spy.mockRestore();
    }
    expect(written.join('')).toMatch(
      /itk3: emulator unreachable \(ECONNREFUSED\).*GetQueueAttributes; giving up/,
    );
  });

  it('does not retry an error that is not a lost connection', async () => {
    const failing = new SqsEventSource(
      { send: async () => Promise.reject(new Error('AccessDenied')) } as never,
      {
        stage: 'verify',
        queueUrl: 'http://127.0.0.1:1/000000000000/q',
        queueArn: 'arn:aws:sqs:us-east-1:000000000000:q',
        batchSize: 1,
        warn: () => {
          throw new Error('no warning expected');
        },
      },
    );
    await expect(failing.depth()).rejects.toThrow('AccessDenied');
  });

  it('recognises lost connections on the error or its cause, and reads the budget from the environment', () => {
    expect(connectionLossCode(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe('ECONNRESET');
    expect(connectionLossCode(new Error('x', { cause: { code: 'EPIPE' } }))).toBe('EPIPE');
    expect(connectionLossCode(Object.assign(new Error('x'), { code: 'AccessDenied' }))).toBeUndefined();
    expect(reconnectFromEnv(undefined)).toEqual({});
    expect(reconnectFromEnv('2.5')).toEqual({ budgetMs: 2_500 });
    expect(() => reconnectFromEnv('forever')).toThrow(/ITK3_EMULATOR_RECONNECT_SECONDS/);
  });
});
