// nginx (Debian nginx-light) serving a folder on a free loopback port, for benchmarks: a server that
// costs little CPU, so the clients' figures are the clients'.
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface NginxOptions {
  /** Folder served at `/`. */
  root: string;
  /** Where the config, pid, logs and temp folders go. */
  workDir: string;
  workerProcesses?: number;
  autoindex?: boolean;
}

export interface Nginx {
  port: number;
  origin: string;
  stop(): void;
}

export async function startNginx(opts: NginxOptions): Promise<Nginx> {
  const port = await freePort();
  const w = opts.workDir;
  await mkdir(join(w, 'tmp'), { recursive: true });
  const conf = join(w, 'nginx.conf');
  await writeFile(
    conf,
    `worker_processes ${opts.workerProcesses ?? 1};
daemon off;
pid ${w}/nginx.pid;
error_log ${w}/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path ${w}/tmp;
  proxy_temp_path ${w}/tmp;
  fastcgi_temp_path ${w}/tmp;
  uwsgi_temp_path ${w}/tmp;
  scgi_temp_path ${w}/tmp;
  types { image/jpeg jpg; text/csv csv; text/html html; }
  server {
    listen 127.0.0.1:${port};
    root ${opts.root};
    location / { autoindex ${opts.autoindex ? 'on' : 'off'}; }
  }
}
`,
  );
  const child = spawn('nginx', ['-c', conf, '-p', w], { stdio: 'inherit' });
  let spawnError: Error | null = null;
  child.on('error', (err) => (spawnError = err));
  await new Promise((r) => setTimeout(r, 500));
  if (spawnError !== null || child.exitCode !== null) {
    throw new Error(`nginx did not start${spawnError ? ` (${(spawnError as Error).message})` : ''}; install it with: apt-get install -y nginx-light`);
  }
  return { port, origin: `http://127.0.0.1:${port}`, stop: () => child.kill('SIGQUIT') };
}
