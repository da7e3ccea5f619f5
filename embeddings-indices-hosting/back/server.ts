// The HTTP routes of `run.ts back` (reference/clip-retrieval.md 4.6): the JSON API, /metrics, and
// the search page's static files. Every request ends in a response: a client mistake is a 400 with
// {"error": "..."}, anything else a 500 with the same shape, and the server keeps serving. CORS is
// open (as clip-retrieval's), so its hosted front end can use this back end.
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HttpClient } from '../../lib/http/client.ts';
import { errorMessage } from '../../lib/log.ts';
import type { ServedIndex } from './indices.ts';
import { BadRequest, parseKnnRequest, parseMetadataRequest, runKnn, runMetadata, type Limits } from './knn.ts';
import { Metrics } from './metrics.ts';
import type { SearchThreads } from './search-threads.ts';

export const FRONT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'front');

const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

export interface BackOptions {
  indices: Map<string, ServedIndex>;
  http: HttpClient;
  limits: Limits;
  /** Threads for each faiss search (the share of the cores of the queries in flight). */
  searchThreads: SearchThreads;
  /** Request bodies above this many bytes get a 400 (base64 images are the large ones). */
  maxBodyBytes: number;
  /** /config.json's defaultBackend; null = the URL the page was requested from. */
  defaultBackend: string | null;
  urlColumn: string;
  log: (m: string) => void;
}

export interface Back {
  server: Server;
  metrics: Metrics;
}

class BodyTooLarge extends BadRequest {}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      // Discard the body as it arrives (the server's requestTimeout bounds how long): answering
      // and closing while the client is still sending would reset the connection before the
      // client reads the 400.
      req.resume();
      reject(new BodyTooLarge(`request body is ${declared} bytes; the limit is ${max} (--max-body-bytes)`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        reject(new BodyTooLarge(`request body is over ${max} bytes (--max-body-bytes)`));
        req.removeAllListeners('data');
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJson(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new BadRequest(`the body is not valid JSON (${(err as Error).message})`);
  }
}

function send(res: ServerResponse, status: number, body: string | Buffer, type: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': String(Buffer.byteLength(body)), 'Access-Control-Allow-Origin': '*', ...extra });
  res.end(body);
}

const sendJson = (res: ServerResponse, status: number, value: unknown, extra?: Record<string, string>): void => send(res, status, JSON.stringify(value) + '\n', 'application/json', extra);

export function createBack(opts: BackOptions): Back {
  const metrics = new Metrics();
  const names = [...opts.indices.keys()];

  async function route(req: IncomingMessage, res: ServerResponse, path: string): Promise<number> {
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS') {
      send(res, 204, '', 'text/plain', { 'Access-Control-Allow-Methods': 'GET, POST, OPTIONS', 'Access-Control-Allow-Headers': 'Content-Type', 'Access-Control-Max-Age': '86400' });
      return 204;
    }
    const post = async (): Promise<unknown> => {
      if (method !== 'POST') throw new MethodNotAllowed('POST');
      return parseJson(await readBody(req, opts.maxBodyBytes));
    };
    switch (path) {
      case '/indices-list':
        sendJson(res, 200, names);
        return 200;
      case '/knn-service': {
        const q = parseKnnRequest(await post(), opts.indices, opts.limits);
        sendJson(res, 200, await runKnn(q, { http: opts.http, metrics, limits: opts.limits, searchThreads: opts.searchThreads }));
        return 200;
      }
      case '/metadata': {
        const { index, ids } = parseMetadataRequest(await post(), opts.indices, opts.limits.maxResultIds);
        sendJson(res, 200, await runMetadata(index, ids, metrics));
        return 200;
      }
      case '/config.json': {
        const host = req.headers.host ?? 'localhost';
        // defaultIndex '' exactly as clip-retrieval's back writes it (reference 4.6).
        sendJson(res, 200, { defaultBackend: opts.defaultBackend ?? `http://${host}`, defaultIndex: '', urlColumn: opts.urlColumn });
        return 200;
      }
      case '/metrics':
        send(res, 200, metrics.render(), 'text/plain; version=0.0.4; charset=utf-8');
        return 200;
      case '/metrics-summary':
        send(res, 200, metrics.summary(), 'text/plain; charset=utf-8');
        return 200;
    }
    const asset = STATIC[path];
    if (asset && (method === 'GET' || method === 'HEAD')) {
      send(res, 200, await readFile(join(FRONT_DIR, asset.file)), asset.type, { 'Cache-Control': 'no-cache' });
      return 200;
    }
    sendJson(res, 404, { error: `no such endpoint ${path}; see /indices-list, /knn-service, /metadata, /metrics, /` });
    return 404;
  }

  const server = createServer((req, res) => {
    const started = performance.now();
    let path = '/';
    try {
      path = new URL(req.url ?? '/', 'http://x').pathname;
    } catch {
      // keep '/'
    }
    const endpoint = path in STATIC ? 'static' : ['/indices-list', '/knn-service', '/metadata', '/config.json', '/metrics', '/metrics-summary'].includes(path) ? path : 'other';
    route(req, res, path).then(
      (status) => metrics.request(endpoint, status, (performance.now() - started) / 1000),
      (err: unknown) => {
        let status = 500;
        if (err instanceof MethodNotAllowed) {
          status = 405;
          sendJson(res, 405, { error: `${path} takes ${err.allowed}` }, { Allow: err.allowed });
        } else if (err instanceof BadRequest) {
          status = 400;
          sendJson(res, 400, { error: err.message });
        } else {
          opts.log(`error on ${req.method} ${path}: ${errorMessage(err)}`);
          sendJson(res, 500, { error: `internal error: ${errorMessage(err)}` });
        }
        metrics.request(endpoint, status, (performance.now() - started) / 1000);
      },
    );
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n{"error": "malformed HTTP request"}\n');
    else socket.destroy();
  });
  return { server, metrics };
}

class MethodNotAllowed extends Error {
  constructor(readonly allowed: string) {
    super(`method not allowed; use ${allowed}`);
  }
}
