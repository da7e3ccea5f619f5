// Command-line checks of the distributor flags, kept apart from redis.ts so that a stage can check
// its flags without loading ioredis (a fifth of a second at every start).
import { CliError } from '../cli.ts';

/** Throws a CliError unless `url` is a redis:// or rediss:// URL. */
export function checkRedisUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new CliError(`--redis-url: "${url}" is not a URL; write e.g. redis://127.0.0.1:6379`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new CliError(`--redis-url: expected redis:// or rediss://, got "${url}"`);
  if (u.hostname === '') throw new CliError(`--redis-url: "${url}" names no host`);
}

/** BullMQ builds Redis keys as `bull:<queue>:...`, so a colon would split the name. */
export function checkQueueName(name: string): void {
  if (name === '' || name.includes(':')) throw new CliError(`--queue-name: "${name}" must be non-empty and contain no ':'`);
}
