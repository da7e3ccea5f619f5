// Which shards are done, and how a shard becomes done (reference 5, 12): a shard is finished iff its
// `<shard>_stats.json` exists. Its other files are moved from temporary names to their final names
// first and the stats file is written last, so a shard's files appear under final names only when
// the whole shard is complete and a crash anywhere before that leaves the shard to be redone.
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { commitFile, TEMP_PREFIX, writeFileAtomic } from '../lib/atomic-file.ts';
import type { DownloadConfig } from './options.ts';
import { formatStatsJson, type ShardStatsJson } from './stats.ts';
import type { PendingFile } from './writers.ts';

export interface OutputState {
  /** Shard ids to skip (incremental mode). */
  doneShards: Set<number>;
  /** Where numbering starts (extend mode: one past the highest existing shard). */
  startShardId: number;
}

/** Shard ids of the top-level `<id>_stats.json` files (img2dataset: every `*.json`, id before `_`). */
export async function finishedShards(outputFolder: string): Promise<Set<number>> {
  const done = new Set<number>();
  let names: string[];
  try {
    names = await readdir(outputFolder);
  } catch {
    return done;
  }
  for (const name of names) {
    if (!name.endsWith('.json') || name.startsWith(TEMP_PREFIX)) continue;
    const head = name.split('_')[0]!;
    // img2dataset crashes on a json whose name does not start with an integer; we skip it.
    if (/^\d+$/.test(head)) done.add(Number(head));
  }
  return done;
}

/**
 * Removes the `.tmp-*` files and folders of shards that never committed (a killed run or worker).
 * Only safe while no worker writes into the folder.
 */
export async function removeTempLeftovers(outputFolder: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(outputFolder)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    await rm(join(outputFolder, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/**
 * Names our runs write at the top of the output folder: a shard's `<id>` folder (files format),
 * `<id>.tar`, `<id>.parquet`, `<id>_stats.json` (and img2dataset's `<id>.json`), the `_tmp`
 * folder and `.tmp-*` temporaries. Overwrite mode removes these and nothing else: never a user's
 * file beside them, never the lock.
 */
export function isOwnOutputName(name: string): boolean {
  return /^\d+(\.tar|\.parquet|_stats\.json|\.json)?$/.test(name) || name === '_tmp' || name.startsWith(TEMP_PREFIX);
}

/** --incremental-mode overwrite: removes what earlier runs wrote; returns how many entries went. */
export async function removeOwnOutputs(outputFolder: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(outputFolder);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!isOwnOutputName(name)) continue;
    await rm(join(outputFolder, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/** Applies --incremental-mode to the output folder and removes leftovers of interrupted runs. */
export async function prepareOutput(outputFolder: string, mode: DownloadConfig['incrementalMode']): Promise<OutputState> {
  if (mode === 'overwrite') await removeOwnOutputs(outputFolder);
  await mkdir(outputFolder, { recursive: true });
  await removeTempLeftovers(outputFolder);
  const existing = await finishedShards(outputFolder);
  if (mode === 'incremental') return { doneShards: existing, startShardId: 0 };
  if (mode === 'extend') return { doneShards: new Set(), startShardId: existing.size ? Math.max(...existing) + 1 : 0 };
  return { doneShards: new Set(), startShardId: 0 };
}

export function statsPath(outputFolder: string, shardName: string): string {
  return join(outputFolder, `${shardName}_stats.json`);
}

/** Moves a shard's files to their final names, then writes its stats file: the shard is done. */
export async function commitShard(outputFolder: string, shardName: string, files: PendingFile[], stats: ShardStatsJson): Promise<void> {
  // A stale stats file from an earlier attempt must not mark a half-replaced shard done.
  await rm(statsPath(outputFolder, shardName), { force: true });
  for (const f of files) {
    if (f.isDir) {
      await rm(f.final, { recursive: true, force: true });
      await rename(f.temp, f.final);
    } else {
      await commitFile(f.temp, f.final);
    }
  }
  await writeFileAtomic(statsPath(outputFolder, shardName), formatStatsJson(stats));
}
