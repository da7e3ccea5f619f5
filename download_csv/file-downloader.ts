// Downloads one file resumably: bytes go to `<file>.part`, a rerun or retry continues it with a
// Range request guarded by If-Range on the validator saved beside it, and the file is renamed to
// its final name only once its size matches what the server announced.
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { commitFile } from '../lib/atomic-file.ts';
import { header, HttpError, statusError, withRetries, type HttpClient, type HttpResponse } from '../lib/http/client.ts';

export interface FileDownloadOptions {
  timeoutMs: number;
  retries: number;
  maxBytes: number;
  /** Size from the listing, when it gave an exact one. */
  listedSize?: number;
  onBytes?: (n: number) => void;
  onRetry?: (err: HttpError, attempt: number) => void;
}

export type FileDownloadStatus = 'downloaded' | 'already_complete';

/**
 * A failure on our side of the wire (the file cannot be created or written: a name too long, a
 * parent that is a file, no permission, disk full). Retrying the request cannot help.
 */
export class LocalFileError extends Error {
  constructor(readonly path: string, override readonly cause: NodeJS.ErrnoException) {
    super(`cannot write ${path}: ${localReason(cause)}`, { cause });
  }
}

function localReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENAMETOOLONG':
      return 'the file name is longer than the filesystem allows (ENAMETOOLONG)';
    case 'ENOTDIR':
      return 'a folder on its path is a file (ENOTDIR)';
    case 'EISDIR':
      return 'a folder already has that name (EISDIR)';
    case 'EEXIST':
      return 'a file is in the way of a folder on its path (EEXIST)';
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${err.code})`;
    case 'ENOSPC':
      return 'no space left on the device (ENOSPC)';
    default:
      return err.message;
  }
}

const isFsError = (err: unknown): err is NodeJS.ErrnoException =>
  err instanceof Error && typeof (err as NodeJS.ErrnoException).syscall === 'string' && typeof (err as NodeJS.ErrnoException).code === 'string';

export interface FileDownloadResult {
  status: FileDownloadStatus;
  size: number;
}

/** What we know of a partial download, kept in `<file>.part.json`. */
interface PartMeta {
  url: string;
  validator: string | null;
  total: number | null;
}

const sizeOf = async (path: string): Promise<number | null> => {
  try {
    return (await stat(path)).size;
  } catch {
    return null;
  }
};

async function readMeta(path: string, url: string): Promise<PartMeta | null> {
  try {
    const meta = JSON.parse(await readFile(path, 'utf8')) as PartMeta;
    return meta.url === url ? meta : null;
  } catch {
    return null;
  }
}

// Total size from `Content-Range: bytes a-b/N` (or the 416 form, an asterisk then /N).
function rangeTotal(value: string | undefined): number | null {
  const m = /\/(\d+)\s*$/.exec(value ?? '');
  return m ? Number(m[1]) : null;
}

function rangeStart(value: string | undefined): number | null {
  const m = /^bytes\s+(\d+)-/.exec(value ?? '');
  return m ? Number(m[1]) : null;
}

export async function downloadFile(client: HttpClient, url: string, dest: string, opts: FileDownloadOptions): Promise<FileDownloadResult> {
  const part = `${dest}.part`;
  const metaPath = `${dest}.part.json`;
  try {
    await mkdir(dirname(dest), { recursive: true });
  } catch (err) {
    throw isFsError(err) ? new LocalFileError(dest, err) : err;
  }

  const existing = await sizeOf(dest);
  if (existing !== null) {
    const expected = opts.listedSize ?? (await remoteSize(client, url, opts));
    if (expected === null || expected === existing) return { status: 'already_complete', size: existing };
    // The server's file changed size: fetch it again; the old copy stays until the new one is whole.
  }

  const attempt = async (): Promise<FileDownloadResult> => {
    const meta = await readMeta(metaPath, url);
    const offset = meta ? ((await sizeOf(part)) ?? 0) : 0;
    const headers: Record<string, string> = {};
    if (offset > 0 && meta) {
      headers.range = `bytes=${offset}-`;
      if (meta.validator) headers['if-range'] = meta.validator;
    }
    const res = await client.open(url, { timeoutMs: opts.timeoutMs, maxBytes: opts.maxBytes, headers, decodeContentEncoding: true });
    try {
      return await receive(res, offset);
    } catch (err) {
      // Whatever failed, the response is released: an abandoned body keeps its request open, and
      // client.close() then waits on it forever (the exit 13 after "done" of issue 16, item 12).
      await res.dump().catch(() => undefined);
      throw err;
    }
  };

  const receive = async (res: HttpResponse, startAt: number): Promise<FileDownloadResult> => {
    let offset = startAt;
    if (res.status === 416 && offset > 0) {
      await res.dump();
      if (rangeTotal(header(res.headers, 'content-range')) === offset) return finish(offset);
      await rm(part, { force: true });
      throw new HttpError('NETWORK', `server refused to resume at byte ${offset}; starting over`, url);
    }
    if (res.status < 200 || res.status >= 300) {
      await res.dump();
      throw statusError(res.url, res.status, res.headers);
    }
    let total: number | null;
    if (res.decodedEncoding !== undefined) {
      // A gzipped response (some servers compress .csv whatever we ask): its lengths and ranges
      // count encoded bytes, so no total to check and no resume; a retry starts at byte 0.
      if (res.status === 206) {
        await res.dump();
        await rm(metaPath, { force: true });
        throw new HttpError('NETWORK', `server sent an encoded (${res.decodedEncoding}) range; starting over`, url);
      }
      offset = 0;
      total = null;
      await rm(metaPath, { force: true });
    } else if (res.status === 206 && rangeStart(header(res.headers, 'content-range')) === offset) {
      total = rangeTotal(header(res.headers, 'content-range'));
    } else {
      // A full body: the file changed (If-Range failed) or the server ignores ranges.
      offset = 0;
      const length = header(res.headers, 'content-length');
      total = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
      const validator = header(res.headers, 'etag') ?? header(res.headers, 'last-modified') ?? null;
      await writeMeta(metaPath, { url, validator, total });
    }
    const fh = await open(part, offset === 0 ? 'w' : 'a');
    let written = offset;
    try {
      try {
        for await (const chunk of res.body) {
          await fh.write(chunk);
          written += chunk.length;
          opts.onBytes?.(chunk.length);
        }
      } catch (err) {
        if (!(err instanceof HttpError) || err.code !== 'NETWORK') throw err;
        const of = total !== null ? ` of ${total}` : '';
        throw new HttpError('NETWORK', `connection lost at byte ${written}${of}: ${err.message}`, url, err.status, undefined, { cause: err });
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (total !== null && written !== total) {
      throw new HttpError('NETWORK', `body ended at ${written} of ${total} bytes`, url);
    }
    return finish(written);
  };

  const finish = async (size: number): Promise<FileDownloadResult> => {
    await commitFile(part, dest);
    await rm(metaPath, { force: true });
    return { status: 'downloaded', size };
  };

  // withRetries retries anything that is not an HttpError; a local failure must end the file at
  // once, so it leaves the retry loop as a non-retryable error and is rethrown as itself.
  let local: LocalFileError | null = null;
  try {
    return await withRetries(url, { retries: opts.retries, onRetry: (e, n) => opts.onRetry?.(e, n) }, async () => {
      try {
        return await attempt();
      } catch (err) {
        if (err instanceof LocalFileError || isFsError(err)) {
          local = err instanceof LocalFileError ? err : new LocalFileError(dest, err);
          throw new HttpError('BAD_URL', local.message, url);
        }
        throw err;
      }
    });
  } catch (err) {
    throw local ?? err;
  }
}

async function writeMeta(path: string, meta: PartMeta): Promise<void> {
  // Small and rewritten whole: a torn write only costs a restart from byte 0.
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(JSON.stringify(meta));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

async function remoteSize(client: HttpClient, url: string, opts: FileDownloadOptions): Promise<number | null> {
  try {
    const res = await client.open(url, { method: 'HEAD', timeoutMs: opts.timeoutMs });
    await res.dump();
    const length = header(res.headers, 'content-length');
    const encoded = (header(res.headers, 'content-encoding') ?? 'identity').trim().toLowerCase() !== 'identity';
    return res.status >= 200 && res.status < 300 && !encoded && length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
  } catch {
    return null;
  }
}
