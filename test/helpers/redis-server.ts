// Redis for the BullMQ tests: REDIS_URL when set (each test uses queues of its own and removes
// them), else a redis-server of the test's own on a free port, stopped at the end; skipped when
// neither is available.
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

const haveRedisServer = spawnSync('redis-server', ['--version']).status === 0;

/** The `skip` option for node:test: a reason when no Redis can be had, else false. */
export const redisSkip: string | false = !process.env.REDIS_URL && !haveRedisServer ? 'redis-server is not installed and REDIS_URL is unset' : false;

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface TestRedis {
  url: string;
  /** A queue name not used before; removed from Redis by stop(). */
  queueName(prefix: string): string;
  /** Removes the queues handed out, and stops the redis-server if this started it. */
  stop(): Promise<void>;
}

/** `dir`: a scratch folder for the server's pid file. */
export async function startTestRedis(dir: string): Promise<TestRedis> {
  let url: string;
  let ownPid: number | null = null;
  if (process.env.REDIS_URL) url = process.env.REDIS_URL;
  else {
    const port = await freePort();
    const pidfile = join(dir, 'redis.pid');
    const r = spawnSync('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'yes', '--pidfile', pidfile, '--dir', dir]);
    if (r.status !== 0) throw new Error(`redis-server did not start: ${r.stderr?.toString()}`);
    url = `redis://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      try {
        ownPid = Number((await readFile(pidfile, 'utf8')).trim());
        const c = new Redis(url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
        c.on('error', () => {});
        await c.connect();
        await c.ping();
        c.disconnect();
        break;
      } catch (err) {
        if (i > 100) throw err;
        await sleep(100);
      }
    }
  }
  const queues: string[] = [];
  let seq = 0;
  return {
    url,
    queueName(prefix) {
      const name = `${prefix}-${process.pid}-${Date.now()}-${seq++}`;
      queues.push(name);
      return name;
    },
    async stop() {
      // A shared Redis (REDIS_URL) keeps no trace of the tests.
      for (const name of queues) {
        const q = new Queue(name, { connection: { url, maxRetriesPerRequest: null } });
        await q.obliterate({ force: true }).catch(() => {});
        await q.close();
      }
      if (ownPid) {
        try {
          process.kill(ownPid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
    },
  };
}
