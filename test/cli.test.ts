import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CliError, defineCli, parseByteSize } from '../lib/cli.ts';
import { runCli } from './helpers/cli-process.ts';

const cli = defineCli({
  command: 'tool',
  summary: 'A test tool.',
  flags: {
    'output-folder': { type: 'string', required: true, help: 'Where' },
    'thread-count': { type: 'int', default: 256, help: 'Threads' },
    'resize-mode': { type: 'string', default: 'border', choices: ['no', 'border', 'center_crop'], help: 'Mode' },
    'enable-wandb': { type: 'bool', default: false, help: 'Wandb' },
    'skip-reencode': { type: 'bool', default: false, help: 'Skip' },
    'save-additional-columns': { type: 'list', default: null, help: 'Columns' },
    'min-similarity': { type: 'float', default: 0.3, help: 'Score' },
  },
});

test('kebab-case and snake_case, --flag value and --flag=value', () => {
  const a = cli.parse(['--output-folder', 'out', '--thread_count=64', '--resize_mode', 'center_crop']).flags;
  assert.equal(a.outputFolder, 'out');
  assert.equal(a.threadCount, 64);
  assert.equal(a.resizeMode, 'center_crop');
  assert.equal(a.minSimilarity, 0.3);
  assert.equal(a.saveAdditionalColumns, null);
});

test('booleans: bare, True/False (python-fire style), --no-flag', () => {
  const f = cli.parse(['--output_folder', 'o', '--enable_wandb', 'True', '--skip-reencode', '--min-similarity', '0.5']).flags;
  assert.equal(f.enableWandb, true);
  assert.equal(f.skipReencode, true);
  assert.equal(f.minSimilarity, 0.5);
  assert.equal(cli.parse(['--output-folder', 'o', '--enable-wandb=False']).flags.enableWandb, false);
  assert.equal(cli.parse(['--output-folder', 'o', '--enable-wandb', '--no-skip-reencode']).flags.skipReencode, false);
});

test('lists as img2dataset users pass them', () => {
  const p = (v: string): unknown => cli.parse(['--output-folder', 'o', '--save_additional_columns', v]).flags.saveAdditionalColumns;
  assert.deepEqual(p('["NSFW","similarity","LICENSE"]'), ['NSFW', 'similarity', 'LICENSE']);
  assert.deepEqual(p("['NSFW', 'similarity']"), ['NSFW', 'similarity']);
  assert.deepEqual(p('NSFW,similarity'), ['NSFW', 'similarity']);
  assert.deepEqual(p('[]'), []);
  // Python's None means the flag's default.
  assert.equal(p('None'), null);
  const withDefault = defineCli({ command: 't', summary: 's', flags: { d: { type: 'list', default: ['noai'], help: 'h' } } });
  assert.deepEqual(withDefault.parse(['--d', 'None']).flags.d, ['noai']);
});

test('bad command lines are one clear error', () => {
  assert.throws(() => cli.parse([]), (e: Error) => e instanceof CliError && /--output-folder is required/.test(e.message));
  assert.throws(() => cli.parse(['--output-folder', 'o', '--thread-count', 'many']), /--thread-count: expected an integer, got "many"/);
  assert.throws(() => cli.parse(['--output-folder', 'o', '--resize-mode', 'stretch']), /not one of no, border, center_crop/);
  assert.throws(() => cli.parse(['--output-folder', 'o', '--threads', '3']), /unknown option --threads \(did you mean/);
});

test('help lists every flag with its default; describe prints the effective settings', () => {
  const help = cli.help();
  for (const f of ['--output-folder', '--thread-count INT', '--resize-mode no|border|center_crop', '--enable-wandb', '(default: 256)', '(required)']) {
    assert.ok(help.includes(f), `help lacks ${f}`);
  }
  const d = cli.describe(cli.parse(['--output-folder', 'o']).flags);
  assert.match(d, /thread-count = 256/);
  assert.match(d, /save-additional-columns = None/);
});

test('byte sizes', () => {
  assert.equal(parseByteSize('50MB'), 50_000_000);
  assert.equal(parseByteSize('4G'), 4 * 1024 ** 3);
  assert.equal(parseByteSize('16GiB'), 16 * 1024 ** 3);
  assert.equal(parseByteSize('1000'), 1000);
  assert.throws(() => parseByteSize('lots'), /not a size/);
});

test('the real CLI: --help exits 0, a bad flag exits 2 with one line', async () => {
  const help = await runCli('download_csv/run.ts', ['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--include LIST/);
  assert.match(help.stdout, /--dry-run/);
  const bad = await runCli('download_csv/run.ts', ['--url', 'http://x.example/', '--output-folder', '/tmp/x', '--paralel', '3']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
  assert.match(bad.stderr, /unknown option --paralel/);
});
