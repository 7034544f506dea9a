/**
 * How a handler gets its ports: a provider function, resolved once per container by a middy
 * middleware and put on the Lambda context. The stage handlers (stage-handler.ts), ingest and the
 * MESH poller share it; deployed functions pass AWS providers, the local runtimes their own ports.
 */
import type { MiddlewareObj } from '@middy/core';
import type { Context } from 'aws-lambda';
import type { LoadedConfig } from '../config/load.js';
import type { Ports } from '../ports/index.js';
import type { PortName } from '../stages/stage.js';

/** What a handler invocation runs with: the ports it uses and the configuration. */
export interface RuntimeBinding<P extends PortName = PortName> {
  ports: Pick<Ports, P>;
  config: LoadedConfig;
}

/** Builds a handler's binding; called once per container (a failed call is retried next invocation). */
export type BindingProvider<P extends PortName = PortName> = () =>
  | RuntimeBinding<P>
  | Promise<RuntimeBinding<P>>;

/** The Lambda context once the ports middleware has run. */
export type BoundContext<P extends PortName = PortName> = Context & RuntimeBinding<P>;

/**
 * Ports middleware, in the manner of `@middy/ssm`'s `setToContext`: resolves the binding once per
 * container from `provide` and puts its members (`ports`, `config`, …) on the request's context. A
 * provider that fails (a cold start with a bad configuration, an unreachable dependency) is not
 * remembered: the next invocation tries again, so one failure does not poison the container.
 */
export function portsMiddleware<B extends object, TEvent = unknown, TResult = unknown>(
  provide: () => B | Promise<B>,
): MiddlewareObj<TEvent, TResult, Error, Context> {
  let binding: Promise<B> | undefined;
  return {
    before: async (request) => {
      if (!binding) {
        const pending = (async () => provide())();
        binding = pending;
        pending.catch(() => {
          if (binding === pending) binding = undefined;
        });
      }
      Object.assign(request.context, await binding);
    },
  };
}
