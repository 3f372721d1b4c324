/**
 * Prometheus metrics: one registry per process, so that several Cairn components in one
 * process (tests, the local demo) share it without name clashes.
 */
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
let defaultsOn = false;

export function enableDefaultMetrics(): void {
  if (defaultsOn) return;
  defaultsOn = true;
  collectDefaultMetrics({ register: registry, prefix: 'cairn_process_' });
}

function existing<T>(name: string): T | undefined {
  return registry.getSingleMetric(name) as T | undefined;
}

export function counter(name: string, help: string, labelNames: string[] = []): Counter<string> {
  return existing<Counter<string>>(name) ?? new Counter({ name, help, labelNames, registers: [registry] });
}

export function gauge(name: string, help: string, labelNames: string[] = []): Gauge<string> {
  return existing<Gauge<string>>(name) ?? new Gauge({ name, help, labelNames, registers: [registry] });
}

export function histogram(name: string, help: string, labelNames: string[] = [], buckets?: number[]): Histogram<string> {
  return (
    existing<Histogram<string>>(name) ??
    new Histogram({ name, help, labelNames, registers: [registry], ...(buckets ? { buckets } : {}) })
  );
}
