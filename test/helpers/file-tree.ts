// The files below a folder, for tests that check what a run left on disk.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Paths of every regular file below `dir`, depth first; none when `dir` does not exist. */
export async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  await walk(dir);
  return out;
}
