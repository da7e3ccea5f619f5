// For the hostile-input suites: a CLI run with a kill deadline (a hang fails the test instead of
// stalling the suite), the one-line error check, and hashes of a folder to prove the files a run
// does not own are untouched.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import assert from 'node:assert/strict';
import { startCli, type CliRun } from './cli-process.ts';
import { filesBelow } from './file-tree.ts';

export interface GuardedRun extends CliRun {
  /** True when the deadline killed it. */
  killed: boolean;
  pid: number;
}

/** Runs the CLI; SIGKILLs it at the deadline. */
export async function runWithin(script: string, args: readonly string[], deadlineMs: number, env?: NodeJS.ProcessEnv): Promise<GuardedRun> {
  const { child, done } = startCli(script, args, env);
  return finishWithin(child, done, deadlineMs);
}

export async function finishWithin(
  child: ReturnType<typeof startCli>['child'],
  done: Promise<CliRun>,
  deadlineMs: number,
): Promise<GuardedRun> {
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, deadlineMs);
  try {
    const r = await done;
    return { ...r, killed, pid: child.pid ?? -1 };
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts the run ended by itself with `code`. */
export function assertExit(r: GuardedRun, code: number): void {
  assert.equal(r.killed, false, `killed at the deadline (a hang); stderr:\n${r.stderr.slice(-2000)}`);
  assert.equal(r.code, code, `exit ${r.code} (signal ${r.signal}), expected ${code}; stderr:\n${r.stderr.slice(-2000)}`);
}

/** Exactly one `error:` line, matching every pattern, and no stack trace. */
export function assertOneErrorLine(stderr: string, ...patterns: RegExp[]): string {
  const errors = stderr.split('\n').filter((l) => l.startsWith('error:'));
  assert.equal(errors.length, 1, `expected one error line, got ${errors.length}:\n${stderr.slice(-2000)}`);
  for (const p of patterns) assert.match(errors[0]!, p);
  assert.doesNotMatch(stderr, /^\s+at .+[:(]/m, `stack trace in stderr:\n${stderr.slice(-2000)}`);
  return errors[0]!;
}

/** sha256 of every file below `dir`, by relative path. */
export async function hashTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of await filesBelow(dir)) out.set(relative(dir, p), createHash('sha256').update(await readFile(p)).digest('hex'));
  return out;
}

/** Every file of `before` is still there with the same bytes. */
export async function assertUntouched(dir: string, before: Map<string, string>): Promise<void> {
  const after = await hashTree(dir);
  for (const [p, h] of before) {
    assert.ok(after.has(p), `${p} was deleted`);
    assert.equal(after.get(p), h, `${p} was changed`);
  }
}
