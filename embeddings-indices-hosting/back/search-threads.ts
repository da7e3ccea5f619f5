// How many threads each faiss search gets. A query alone on the machine takes all the cores:
// on an IVF index its probed lists are split among them (faiss parallel_mode 1), so it finishes
// sooner (1M x 512 IVF-Flat, nprobe 104, one client on 2 cores: p50 7.5 -> 6.0 ms; the scan waits
// on memory more than on arithmetic, hence less than 2x). Concurrent queries share the cores
// out (cores / queries in flight, at least one each), down to one thread per query when there
// are as many queries as cores: more would only oversubscribe them. HNSW and flat indices
// search one query on one thread whatever they are given, so they always get one.
import type { NativeIndex } from '../../lib/faiss/index.ts';

export class SearchThreads {
  private inFlight = 0;
  private readonly splitting = new WeakSet<NativeIndex>();

  constructor(readonly cores: number) {}

  /** Lets `index` use several threads per query where it can (IVF); returns whether it can. */
  enableSplitting(index: NativeIndex): boolean {
    // typeof: an addon built before splitQueriesOverLists existed lacks the method
    if (this.cores < 2 || typeof index.splitQueriesOverLists !== 'function' || !index.splitQueriesOverLists(true)) return false;
    this.splitting.add(index);
    return true;
  }

  /** Runs `search` with this query's share of the cores. */
  async run<T>(index: NativeIndex, search: (threads: number) => Promise<T>): Promise<T> {
    this.inFlight++;
    try {
      return await search(this.splitting.has(index) ? Math.max(1, Math.floor(this.cores / this.inFlight)) : 1);
    } finally {
      this.inFlight--;
    }
  }
}
