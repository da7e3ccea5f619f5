// Micro-benchmark of the image side of stage 3: corpus generation speed, then the resizer over
// that corpus with N images in flight (img2dataset defaults: border, 256, area/lanczos, jpg q95).
//   npx tsx bench/resizer.ts [--images 200] [--in-flight 4]
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineCli } from '../lib/cli.ts';
import { writeImageCorpus } from '../demo/images.ts';
import { createResizer, DEFAULT_RESIZER_OPTIONS } from '../download_images/resizer.ts';

const cli = defineCli({
  command: 'npx tsx bench/resizer.ts',
  summary: 'Time demo corpus generation and the resizer on this machine.',
  flags: {
    images: { type: 'int', default: 200, help: 'JPEGs (320-1600 px) to generate and resize' },
    'in-flight': { type: 'int', default: 4, help: 'Images resized at once' },
  },
});
const { flags } = cli.run();
const dir = await mkdtemp(join(tmpdir(), 'bench-resizer-'));
try {
  const gen = await writeImageCorpus(dir, flags.images);
  process.stdout.write(
    `corpus: ${gen.files} JPEGs, mean ${(gen.bytes / gen.files / 1024).toFixed(0)} KB, ${gen.seconds.toFixed(1)} s ` +
      `(${(gen.files / gen.seconds).toFixed(0)} img/s; 20,000 would take ~${((20000 / gen.files) * gen.seconds / 60).toFixed(1)} min)\n`,
  );
  const inputs = await Promise.all((await readdir(dir)).map((f) => readFile(join(dir, f))));
  const resize = createResizer(DEFAULT_RESIZER_OPTIONS);
  const started = performance.now();
  let next = 0;
  let out = 0;
  await Promise.all(
    Array.from({ length: flags.inFlight }, async () => {
      while (next < inputs.length) {
        const r = await resize(inputs[next++]);
        if (r.error) throw new Error(r.error);
        out += r.image!.length;
      }
    }),
  );
  const s = (performance.now() - started) / 1000;
  process.stdout.write(
    `resize: ${inputs.length} images in ${s.toFixed(2)} s = ${(inputs.length / s).toFixed(0)} img/s ` +
      `(${flags.inFlight} in flight, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}), mean output ${(out / inputs.length / 1024).toFixed(1)} KB\n`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
