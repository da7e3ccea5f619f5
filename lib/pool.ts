// Runs async work over a stream of items with at most `limit` in flight, in input order of start.

export async function runPool<T>(
  items: Iterable<T> | AsyncIterable<T>,
  limit: number,
  worker: (item: T, index: number) => Promise<void>,
): Promise<void> {
  const running = new Set<Promise<void>>();
  let index = 0;
  let failure: { err: unknown } | null = null;
  for await (const item of items as AsyncIterable<T>) {
    if (failure) break;
    const p: Promise<void> = worker(item, index++)
      .catch((err: unknown) => {
        failure ??= { err };
      })
      .finally(() => running.delete(p));
    running.add(p);
    if (running.size >= limit) await Promise.race(running);
  }
  await Promise.all(running);
  if (failure) throw (failure as { err: unknown }).err;
}
