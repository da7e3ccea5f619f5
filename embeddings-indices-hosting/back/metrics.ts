// Prometheus text exposition (format 0.0.4) without a client library: request counters and latency
// histograms per endpoint, plus the per-step histograms clip-retrieval back exposes under the same
// names (full_knn_request_time, knn_index_time, ...), so its Grafana dashboard keeps working.

/** Prometheus client defaults, in seconds. */
export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

class Histogram {
  private readonly series = new Map<string, { labels: Record<string, string>; counts: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets = DEFAULT_BUCKETS,
  ) {}

  observe(seconds: number, labels: Record<string, string> = {}): void {
    const key = JSON.stringify(labels);
    let s = this.series.get(key);
    if (!s) {
      s = { labels, counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]!) s.counts[i]!++;
    s.sum += seconds;
    s.count++;
  }

  stats(): { count: number; sum: number } {
    let count = 0;
    let sum = 0;
    for (const s of this.series.values()) {
      count += s.count;
      sum += s.sum;
    }
    return { count, sum };
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: String(b) })} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${s.sum}`);
      lines.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines.join('\n');
  }
}

class Counter {
  private readonly series = new Map<string, { labels: Record<string, string>; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Record<string, string> = {}): void {
    const key = JSON.stringify(labels);
    const s = this.series.get(key);
    if (s) s.value++;
    else this.series.set(key, { labels, value: 1 });
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const s of this.series.values()) lines.push(`${this.name}${labelText(s.labels)} ${s.value}`);
    return lines.join('\n');
  }
}

/** The steps of a knn query, named as clip-retrieval names them. */
export const STEPS = {
  full_knn_request_time: 'time for a full knn request',
  download_time: 'time to download an image_url',
  text_clip_inference_time: 'time for the text tower',
  image_clip_inference_time: 'time for the image tower',
  metadata_get_time: 'time to read metadata',
  knn_index_time: 'time for the faiss search',
  dedup_time: 'time to remove near duplicates',
  safety_time: 'time for the safe-mode filter',
  image_prepro_time: 'time to decode and preprocess an image',
  text_prepro_time: 'time to tokenise a text',
} as const;
export type Step = keyof typeof STEPS;

export class Metrics {
  readonly requests = new Counter('back_requests_total', 'HTTP requests by endpoint and status code');
  readonly latency = new Histogram('back_request_duration_seconds', 'HTTP request latency by endpoint');
  private readonly steps = new Map<Step, Histogram>();

  constructor() {
    for (const [name, help] of Object.entries(STEPS) as [Step, string][]) this.steps.set(name, new Histogram(name, help));
  }

  request(endpoint: string, status: number, seconds: number): void {
    this.requests.inc({ endpoint, status: String(status) });
    this.latency.observe(seconds, { endpoint });
  }

  step(name: Step, seconds: number): void {
    this.steps.get(name)!.observe(seconds);
  }

  /** Times `fn` into the step's histogram. */
  async time<T>(name: Step, fn: () => Promise<T> | T): Promise<T> {
    const t = performance.now();
    try {
      return await fn();
    } finally {
      this.step(name, (performance.now() - t) / 1000);
    }
  }

  render(): string {
    return [this.requests.render(), this.latency.render(), ...[...this.steps.values()].map((h) => h.render())].join('\n') + '\n';
  }

  /** clip-retrieval's /metrics-summary, as plain text. */
  summary(): string {
    const full = this.steps.get('full_knn_request_time')!.stats();
    if (full.count === 0) return 'No request yet, go do some';
    const avg = full.sum / full.count;
    const rows = [...this.steps.entries()]
      .map(([name, h]) => ({ name, ...h.stats() }))
      .filter((r) => r.count > 0)
      .map((r) => ({ name: r.name, calls: r.count, average: r.sum / r.count }))
      .sort((a, b) => b.average - a.average);
    const lines = [`Among ${full.count} calls to the knn end point with an average latency of ${avg.toFixed(4)}s per request, the step costs are (in order):`];
    lines.push(`${'name'.padEnd(28)} ${'description'.padEnd(40)} ${'calls'.padStart(7)} ${'average'.padStart(9)} ${'proportion'.padStart(10)}`);
    for (const r of rows) {
      lines.push(`${r.name.padEnd(28)} ${STEPS[r.name].padEnd(40)} ${String(r.calls).padStart(7)} ${(r.average.toFixed(4) + 's').padStart(9)} ${((100 * r.average) / avg).toFixed(1).padStart(9)}%`);
    }
    return lines.join('\n');
  }
}
