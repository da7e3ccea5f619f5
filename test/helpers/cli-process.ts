// Runs a stage's CLI as a child process, as a user would, for end-to-end tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** tsx's loader by URL, so a child started outside the repository (cwd) finds it too. */
const TSX = import.meta.resolve('tsx');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface LiveCli {
  child: ChildProcess;
  done: Promise<CliRun>;
  /** What it has written to stderr so far. */
  stderr(): string;
}

/** Starts `node --import tsx <script> ...args`, by default from the repository root. */
export function startCli(script: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, cwd = REPO_ROOT): LiveCli {
  const child = spawn(process.execPath, ['--import', TSX, resolve(REPO_ROOT, script), ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliRun>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done, stderr: () => stderr };
}

export function runCli(script: string, args: readonly string[], env?: NodeJS.ProcessEnv, cwd?: string): Promise<CliRun> {
  return startCli(script, args, env, cwd).done;
}

/** Polls `cond` every 50 ms; throws naming `what` after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
