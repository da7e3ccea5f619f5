// Optional interop check, run by hand: our webdataset output read by Python's `webdataset` and
// `pyarrow` (pip-installed into a venv here), compared field by field with img2dataset's output of
// the same input. bench/download-images.ts leaves both outputs behind; by default those are used.
//
//   npx tsx bench/interop/run.ts [--ours DIR] [--img2dataset DIR]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineCli } from '../../lib/cli.ts';

const cli = defineCli({
  command: 'npx tsx bench/interop/run.ts',
  summary: 'Read our webdataset output with Python webdataset + pyarrow and diff its fields against img2dataset output.',
  flags: {
    ours: { type: 'string', default: '.bench/download-images/out-ours-20000', help: 'Our output folder' },
    img2dataset: { type: 'string', default: '.bench/download-images/out-img2dataset-20000', help: "img2dataset's output folder of the same input ('' to skip the diff)" },
    venv: { type: 'string', default: '.bench/interop-venv', help: 'Python venv (created with webdataset, pyarrow, pillow when missing)' },
  },
});

const { flags } = cli.run();
const venv = resolve(flags.venv);
const python = join(venv, 'bin', 'python');
if (!existsSync(python)) {
  for (const [cmd, args] of [
    ['python3', ['-m', 'venv', venv]],
    [join(venv, 'bin', 'pip'), ['install', '-q', 'webdataset', 'pyarrow', 'pillow']],
  ] as const) {
    const r = spawnSync(cmd, [...args], { stdio: 'inherit' });
    if (r.status !== 0) {
      process.stderr.write(`error: ${cmd} ${args.join(' ')} failed; the interop check needs PyPI\n`);
      process.exit(1);
    }
  }
}
const script = fileURLToPath(new URL('./check.py', import.meta.url));
const args = [script, resolve(flags.ours), ...(flags.img2dataset ? [resolve(flags.img2dataset)] : [])];
const r = spawnSync(python, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
