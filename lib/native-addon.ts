// Our N-API addons: each is a few C++ files under lib/, built by one g++ command against npm's
// node-api-headers (never Node's own headers or node-gyp) into build/native/<name>.node.
//   npx tsx lib/native-addon.ts [name ...]      (npm run build:native)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineCli, isMainModule } from './cli.ts';
import { errorMessage, log } from './log.ts';

export interface AddonSpec {
  name: string;
  /** Source files relative to the repository root. */
  sources: readonly string[];
  /** Linker flags, e.g. -ljpeg. */
  libs: readonly string[];
  /** The Debian package that provides the headers and libraries. */
  debianPackages: readonly string[];
  /** Extra compiler flags for this addon only (e.g. -fopenmp). */
  cflags?: readonly string[];
}

export const ADDONS: readonly AddonSpec[] = [
  { name: 'image_ops', sources: ['lib/image-ops/addon.cc', 'lib/image-ops/jpeg-codec.cc', 'lib/image-ops/png-webp-codec.cc', 'lib/image-ops/resample.cc', 'lib/image-ops/transform.cc', 'lib/image-ops/progressive-refine.cc', 'lib/image-ops/clip-preprocess.cc'], libs: ['-ljpeg', '-lspng', '-lwebp'], debianPackages: ['g++', 'libjpeg-dev', 'libspng-dev', 'libwebp-dev'] },
  // Debian ships faiss only as a static PIC libfaiss.a: it links into the addon with OpenBLAS + OpenMP.
  // distance-kernels.cc redefines faiss' scalar distance functions (AVX2 where the CPU has it):
  // --allow-multiple-definition keeps the first definition, ours, which precedes -lfaiss.
  { name: 'faiss', sources: ['lib/faiss/addon.cc', 'lib/faiss/distance-kernels.cc', 'lib/faiss/ivf-sq-fp16.cc'], libs: ['-lfaiss', '-lopenblas', '-lgomp', '-Wl,--allow-multiple-definition'], debianPackages: ['g++', 'libfaiss-dev', 'libopenblas-dev'], cflags: ['-fopenmp'] },
];

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

export function addonPath(name: string): string {
  return join(ROOT, 'build', 'native', `${name}.node`);
}

export function buildCommand(spec: AddonSpec, out: string): string[] {
  const headers = join(dirname(require.resolve('node-api-headers/package.json')), 'include');
  const addonApi = dirname(require.resolve('node-addon-api/package.json'));
  return [
    'g++', '-shared', '-fPIC', '-O3', '-fno-math-errno', '-std=c++17', '-fexceptions', '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', ...(spec.cflags ?? []),
    `-I${headers}`, `-I${addonApi}`, ...spec.sources.map((s) => join(ROOT, s)), '-o', out, ...spec.libs,
  ];
}

export function buildAddon(spec: AddonSpec): string {
  const out = addonPath(spec.name);
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  const [cmd, ...args] = buildCommand(spec, tmp);
  try {
    execFileSync(cmd!, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (err) {
    throw new Error(`building ${spec.name} failed (${errorMessage(err)}); install the Debian packages ${spec.debianPackages.join(' ')} and rerun npm run build:native`);
  }
  renameSync(tmp, out);
  return out;
}

const loaded = new Map<string, unknown>();

/** The built addon, or null with the reason when build/native/<name>.node is absent or fails to load. */
export function loadAddon<T>(name: string): { addon: T; reason: null } | { addon: null; reason: string } {
  const path = addonPath(name);
  if (loaded.has(path)) return { addon: loaded.get(path) as T, reason: null };
  if (!existsSync(path)) return { addon: null, reason: `${path} is not built (npm run build:native)` };
  try {
    const addon = require(path) as T;
    loaded.set(path, addon);
    return { addon, reason: null };
  } catch (err) {
    return { addon: null, reason: `${path} does not load: ${errorMessage(err)} (rebuild with npm run build:native)` };
  }
}

if (isMainModule(import.meta.url)) {
  const cli = defineCli({
    command: 'npx tsx lib/native-addon.ts',
    summary: `Build the N-API addons (${ADDONS.map((a) => a.name).join(', ')}) into build/native/.`,
    positionals: ['name ...'],
    flags: {},
  });
  const { positionals } = cli.run();
  const wanted = positionals.length > 0 ? positionals : ADDONS.map((a) => a.name);
  let failed = false;
  for (const name of wanted) {
    const spec = ADDONS.find((a) => a.name === name);
    if (!spec) {
      log.error(`unknown addon ${name}; known: ${ADDONS.map((a) => a.name).join(', ')}`);
      failed = true;
      continue;
    }
    const started = performance.now();
    try {
      const out = buildAddon(spec);
      log.info(`built ${out} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      log.error(errorMessage(err));
      failed = true;
    }
  }
  process.exit(failed ? 1 : 0);
}
