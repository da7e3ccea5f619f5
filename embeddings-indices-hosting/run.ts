// Stage 4: clip-retrieval's jobs as subcommands. This file only dispatches: each subcommand is its
// own module exporting `main(argv)`, loaded on demand so `inference` never loads faiss and `index`
// never loads onnxruntime.
//   npx tsx embeddings-indices-hosting/run.ts inference|index|score|back [flags]   (--help on each)
import { isMainModule } from '../lib/cli.ts';
import { errorMessage } from '../lib/log.ts';

interface Subcommand {
  summary: string;
  /** Module path relative to this file; it exports main(argv) resolving to the exit code. */
  module: string;
}

const SUBCOMMANDS: Record<string, Subcommand> = {
  inference: { summary: 'CLIP image and text embeddings of webdataset / files / parquet samples (clip-retrieval inference)', module: './inference/cli.ts' },
  index: { summary: 'faiss image and text indices within a memory budget (clip-retrieval index + autofaiss)', module: './index/cli.ts' },
  score: { summary: 'recall@k and latency of built indices against exact search', module: './index/score-cli.ts' },
  back: { summary: 'query back end and search page (clip-retrieval back)', module: './back/cli.ts' },
};

function usage(): string {
  const lines = ['usage: npx tsx embeddings-indices-hosting/run.ts <subcommand> [flags]', '', 'subcommands:'];
  for (const [name, s] of Object.entries(SUBCOMMANDS)) lines.push(`  ${name.padEnd(10)} ${s.summary}`);
  lines.push('', 'Each subcommand takes --help.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  const sub = SUBCOMMANDS[name];
  if (!sub) {
    process.stderr.write(`error: unknown subcommand ${JSON.stringify(name)}; use one of ${Object.keys(SUBCOMMANDS).join(', ')}\n`);
    return 2;
  }
  let mod: { main: (argv: string[]) => Promise<number> };
  try {
    mod = (await import(sub.module)) as typeof mod;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String((err as Error).message).includes(sub.module.slice(2))) {
      process.stderr.write(`error: subcommand ${name} is not built yet in this version\n`);
      return 2;
    }
    throw err;
  }
  return mod.main(rest);
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`error: ${errorMessage(err)}\n`);
      process.exit(1);
    },
  );
}
