// One run per output folder: a lock file created with O_EXCL holds the owner's pid, host and start
// time. A second run finds it and stops with one line naming the holder. A lock whose pid is dead
// on this host (a kill -9, a crash) is stale and taken over; one from another host is never
// guessed stale, since we cannot see that host's processes.
import { readFileSync, unlinkSync } from 'node:fs';
import { link, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CliError } from './cli.ts';

/** The lock's file name inside the output folder; the stages never delete or overwrite it otherwise. */
export const LOCK_NAME = '_lock';

export interface LockInfo {
  pid: number;
  host: string;
  /** ISO time the run started. */
  started: string;
  /** Start time of the process in clock ticks since boot (Linux), to tell a reused pid apart. */
  procStart: string | null;
  command: string;
}

export interface OutputLock {
  path: string;
  /** Removes the lock file (also done on process exit). */
  release(): void;
}

/** Field 22 of /proc/<pid>/stat: when the process started; null where /proc is absent. */
function processStartTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether a process with this pid exists on this machine (EPERM: it does, owned by another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when the holder is certainly gone: same host, and its pid is dead or now another process. */
function isStale(info: LockInfo): boolean {
  if (info.host !== hostname()) return false;
  if (!Number.isInteger(info.pid) || info.pid <= 0 || !isAlive(info.pid)) return true;
  if (info.pid === process.pid) return false;
  const now = processStartTicks(info.pid);
  return info.procStart !== null && now !== null && now !== info.procStart;
}

function describeHolder(info: LockInfo | null, path: string): string {
  if (info === null) return `${path} exists but cannot be read`;
  return `pid ${info.pid} on ${info.host}, started ${info.started}${info.command ? ` (${info.command})` : ''}`;
}

async function readLock(path: string): Promise<LockInfo | null> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<LockInfo>;
    if (typeof v.pid !== 'number' || typeof v.host !== 'string') return null;
    return { pid: v.pid, host: v.host, started: String(v.started ?? '?'), procStart: v.procStart ?? null, command: String(v.command ?? '') };
  } catch {
    return null;
  }
}

const held = new Map<string, OutputLock>();

/**
 * Takes the output folder's lock (creating the folder), or throws a CliError naming who holds it;
 * callers turn that into exit code 2. The lock is released when the process exits, however it
 * exits short of a SIGKILL; a SIGKILL leaves a stale lock that the next run takes over.
 */
export async function acquireOutputLock(folder: string, command = process.argv.slice(1).join(' ')): Promise<OutputLock> {
  const isFile = await stat(folder).then((st) => !st.isDirectory(), () => false);
  if (isFile) throw new CliError(`--output-folder ${folder} is a file, not a folder; pick another --output-folder`);
  try {
    await mkdir(folder, { recursive: true });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CliError(`--output-folder ${folder} cannot be used (${e.code ?? 'error'}: ${e.message.replace(/^\w+: /, '')})`);
  }
  const path = join(folder, LOCK_NAME);
  const existing = held.get(path);
  if (existing) return existing;
  const info: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString(), procStart: processStartTicks(process.pid), command };
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(JSON.stringify(info) + '\n');
      } finally {
        await fh.close();
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new CliError(`cannot create the lock file ${path}: ${(err as Error).message}`);
      }
      const holder = await readLock(path);
      // An unreadable lock may be one being written this instant: look once more before judging.
      if (holder === null && attempt === 0) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      if (holder === null || !isStale(holder) || attempt >= 2) {
        throw new CliError(
          `${folder} is in use by another run: ${describeHolder(holder, path)}; wait for it to end, or delete ${path} if that run is gone`,
        );
      }
      // Stale: move it aside under a name of our own, so two runs taking it over at once cannot
      // both succeed (only one rename of the stale file wins; the loser sees the winner's lock).
      const aside = `${path}.stale-${process.pid}`;
      try {
        await rename(path, aside);
      } catch {
        continue; // someone else moved it first
      }
      const moved = await readLock(aside);
      if (moved !== null && (moved.pid !== holder.pid || moved.started !== holder.started)) {
        // We moved a fresh lock that another run had just taken: put it back (link fails if a
        // third run has created one meanwhile, which then holds the folder).
        await link(aside, path).catch(() => undefined);
      }
      await rm(aside, { force: true });
    }
  }
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    held.delete(path);
    process.off('exit', release);
    try {
      // Only remove the lock if it is still ours.
      const now = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockInfo>;
      if (now.pid === info.pid && now.host === info.host && now.started === info.started) unlinkSync(path);
    } catch {
      // already gone
    }
  };
  process.on('exit', release);
  const lock = { path, release };
  held.set(path, lock);
  return lock;
}

/** SIGINT / SIGTERM exit through process.exit so the exit handlers (the lock's release) run. */
export function exitOnSignals(): void {
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    if (process.listenerCount(sig) === 0) process.once(sig, () => process.exit(code));
  }
}

/**
 * For a stage's main(): takes the lock, or prints the one-line reason and exits 2. SIGINT and
 * SIGTERM then exit through process.exit, so the lock is released on Ctrl-C too.
 */
export async function lockOutputOrExit(folder: string): Promise<OutputLock> {
  try {
    const lock = await acquireOutputLock(folder);
    exitOnSignals();
    return lock;
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(2);
  }
}
