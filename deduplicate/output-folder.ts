// What run.ts and filter.ts may delete in their output folder: only the files an earlier run of the
// same tool wrote, as named by its manifest (`_summary.json` / `_filter.json`, field `files`). A
// parquet file there that no manifest names is someone else's: the run refuses the folder instead
// of mixing its parts with that file or deleting it. New outputs are staged under `_tmp/` and
// swapped in at the end, so a failed or killed run leaves an earlier complete output (and its
// `_SUCCESS`) as it was.
import { mkdir, readFile, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-file.ts';
import { CliError } from '../lib/cli.ts';

export interface OutputClaim {
  folder: string;
  /** `_summary.json` or `_filter.json`. */
  manifest: string;
  /** Files (relative paths) an earlier run of this tool wrote and that are still there. */
  owned: string[];
  /** Staging folder for the new outputs. */
  tmp: string;
  /** The folder did not exist before this run (removed again if the run fails and leaves it empty). */
  created: boolean;
}

/** Reads the `files` list of an earlier run's manifest; null when there is no manifest. */
async function ownedByManifest(folder: string, manifest: string, legacy: Legacy): Promise<string[] | null> {
  let text: string;
  try {
    text = await readFile(join(folder, manifest), 'utf8');
  } catch {
    return null;
  }
  let files: unknown;
  try {
    files = (JSON.parse(text) as { files?: unknown }).files;
  } catch {
    return null;
  }
  if (Array.isArray(files)) return files.filter((f): f is string => typeof f === 'string' && !f.startsWith('/') && !f.split('/').includes('..'));
  // A manifest from before `files` existed: only its own fixed names count as ours.
  const names = await readdir(folder).catch(() => [] as string[]);
  return legacy(names);
}

/** The files a manifest from before its `files` list named implicitly, given the folder's top-level names. */
type Legacy = (names: readonly string[]) => string[];

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/**
 * Checks the output folder before any work: refuses (CliError, exit 2) a folder holding a parquet
 * file that no earlier run of this tool wrote, or a file under a name this run will write.
 * `planned`: the relative paths this run will publish.
 */
export async function claimOutputFolder(
  folder: string,
  manifest: string,
  planned: readonly string[],
  legacy: Legacy = () => [],
): Promise<OutputClaim> {
  const info = await stat(folder).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw new CliError(`--output-folder ${folder} cannot be used (${err.code ?? err.message}: a part of the path is a file, or it is not readable); choose another path`);
  });
  if (info && !info.isDirectory()) throw new CliError(`--output-folder ${folder} is a file, not a folder; choose another path`);
  const claim: OutputClaim = { folder, manifest, owned: [], tmp: join(folder, '_tmp'), created: !info };
  if (!info) return claim;
  const owned = (await ownedByManifest(folder, manifest, legacy)) ?? [];
  claim.owned = [];
  for (const f of owned) if (await exists(join(folder, f))) claim.owned.push(f);
  const ours = new Set(claim.owned);
  const names = (await readdir(folder)).sort();
  const foreign = names.filter((n) => n.toLowerCase().endsWith('.parquet') && !ours.has(n));
  for (const p of planned) if (!ours.has(p) && !foreign.includes(p) && (await exists(join(folder, p)))) foreign.push(p);
  if (foreign.length > 0) {
    const shown = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? ` and ${foreign.length - 3} more` : '');
    throw new CliError(
      `--output-folder ${folder} holds ${shown}, which no earlier run of this tool wrote (no ${manifest} names it); ` +
        'nothing was changed: choose an empty or new folder, or move those files away',
    );
  }
  return claim;
}

/** Empties `_tmp/` (an earlier attempt's leftovers) and creates it. */
export async function startStaging(claim: OutputClaim): Promise<void> {
  await rm(claim.tmp, { recursive: true, force: true });
  await mkdir(claim.tmp, { recursive: true });
}

/**
 * Swaps the staged files in. `_SUCCESS` goes first; the manifest names the old and the new files
 * while both may be present, so a run killed half-way still knows every file as its own; then the
 * old files the new output does not replace are deleted, the new ones renamed in, the manifest
 * rewritten with the new files only, `_tmp/` removed and `_SUCCESS` written last.
 * `staged(f)` is where file f lies under `_tmp/`.
 */
export async function publishOutput(
  claim: OutputClaim,
  files: readonly string[],
  staged: (file: string) => string,
  manifest: (files: readonly string[]) => object,
): Promise<void> {
  const { folder } = claim;
  const write = (list: readonly string[]): Promise<void> =>
    writeFileAtomic(join(folder, claim.manifest), JSON.stringify({ ...manifest(list), files: list }, null, 2) + '\n');
  await rm(join(folder, '_SUCCESS'), { force: true });
  const next = new Set(files);
  await write([...new Set([...claim.owned, ...files])]);
  for (const f of claim.owned) if (!next.has(f)) await rm(join(folder, f), { force: true });
  for (const f of files) {
    await mkdir(dirname(join(folder, f)), { recursive: true });
    await rename(staged(f), join(folder, f));
  }
  await write(files);
  claim.owned = [...files];
  await rm(claim.tmp, { recursive: true, force: true });
  await writeFileAtomic(join(folder, '_SUCCESS'), '');
}

/** After a failed run: `_tmp/` goes, and the folder too when this run created it and it is empty. */
export async function abandonOutput(claim: OutputClaim): Promise<void> {
  await rm(claim.tmp, { recursive: true, force: true }).catch(() => undefined);
  if (claim.created) await rmdir(claim.folder).catch(() => undefined);
}
