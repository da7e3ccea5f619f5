// Nothing appears under its final name until it is complete: write to a temporary name in the same
// folder, fsync, then rename (atomic on POSIX filesystems).
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { finished } from 'node:stream/promises';

/** Temporary names start with this, so cleanup can recognise and remove leftovers of a crash. */
export const TEMP_PREFIX = '.tmp-';

export function tempPathFor(finalPath: string): string {
  return join(dirname(finalPath), `${TEMP_PREFIX}${randomBytes(4).toString('hex')}-${basename(finalPath)}`);
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    await fsyncPath(dir);
  } catch {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  }
}

/** Moves a finished temporary file to its final name durably. */
export async function commitFile(tempPath: string, finalPath: string): Promise<void> {
  await fsyncPath(tempPath);
  await rename(tempPath, finalPath);
  await fsyncDir(dirname(finalPath));
}

export async function writeFileAtomic(finalPath: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(finalPath), { recursive: true });
  const tmp = tempPathFor(finalPath);
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, finalPath);
    await fsyncDir(dirname(finalPath));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface AtomicWriteStream {
  stream: WriteStream;
  tempPath: string;
  /** Ends the stream and renames it to its final name. */
  commit(): Promise<void>;
  /** Ends the stream and deletes the temporary file. */
  abort(): Promise<void>;
}

export async function createAtomicWriteStream(finalPath: string): Promise<AtomicWriteStream> {
  await mkdir(dirname(finalPath), { recursive: true });
  const tempPath = tempPathFor(finalPath);
  const stream = createWriteStream(tempPath);
  return {
    stream,
    tempPath,
    async commit() {
      stream.end();
      await finished(stream);
      await commitFile(tempPath, finalPath);
    },
    async abort() {
      stream.destroy();
      await rm(tempPath, { force: true });
    },
  };
}
