// Prints, as JSON, search results of several index types on fixed data, with whichever distance
// kernels this process loaded (CAH_FAISS_KERNELS=generic forces Debian's). test/faiss-kernels.test.ts
// runs it once per kernel set and compares.
import { createIndex, loadFaiss } from '../../lib/faiss/index.ts';
import { clusteredVectors } from './clustered-vectors.ts';

const out: Record<string, unknown> = { kernels: loadFaiss().distanceKernels };
// d = 100: the 32-wide loop, the 8-wide loop and a scalar tail; d = 7: scalar only (PQ sub-vectors)
for (const d of [100, 7]) {
  const n = 3000;
  const x = clusteredVectors(n, d, { clusters: 30, seed: 3 });
  const q = clusteredVectors(40, d, { clusters: 30, seed: 4 });
  for (const [key, metric, params] of [['Flat', 'ip', ''], ['Flat', 'l2', ''], ['HNSW16', 'ip', 'efSearch=64'], ['IVF16,Flat', 'l2', 'nprobe=4'], ['IVF16,PQ4x6', 'ip', 'nprobe=4']] as const) {
    if (d === 7 && key.includes('PQ')) continue;
    const idx = createIndex(d, key, metric);
    idx.configureTraining({ pqNiter: 5 });
    if (!idx.isTrained) await idx.train(x, n, 1);
    await idx.add(x, n, 1);
    if (params) idx.setParameters(params);
    const r = await idx.search(q, 40, 10, 1);
    out[`${d} ${key} ${metric}`] = { labels: Array.from(r.labels), distances: Array.from(r.distances) };
    idx.dispose();
  }
}
process.stdout.write(JSON.stringify(out));
