// Per-shard `<shard>_stats.json` exactly as img2dataset's logger writes it (reference 2.7), the
// status counter behind it, and the run summary printed at the end (reference 7).
import { pyJsonDumps, PyFloat } from './python-text.ts';

export type SampleStatus = 'success' | 'failed_to_download' | 'failed_to_resize';

/** status/error string -> count in first-seen order; like img2dataset's CappedCounter. */
export class CappedCounter {
  private readonly counts = new Map<string, number>();
  constructor(private readonly max = 100_000) {}

  add(key: string, n = 1): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
    if (this.counts.size > this.max) {
      // Keep the most common half, as img2dataset does.
      const keep = [...this.counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, Math.floor(this.max / 2));
      this.counts.clear();
      for (const [k, v] of keep) this.counts.set(k, v);
    }
  }

  merge(other: Record<string, number>): void {
    for (const [k, v] of Object.entries(other)) this.add(k, v);
  }

  entries(): [string, number][] {
    return [...this.counts.entries()];
  }

  toObject(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}

export interface ShardStatsJson {
  count: number;
  successes: number;
  failed_to_download: number;
  failed_to_resize: number;
  duration: number;
  start_time: number;
  end_time: number;
  status_dict: Record<string, number>;
}

export class ShardStats {
  count = 0;
  successes = 0;
  failedToDownload = 0;
  failedToResize = 0;
  readonly statusDict = new CappedCounter();
  readonly startTime = nowSeconds();
  endTime = 0;

  /** Counts one input row (rows that threw count only here, as in img2dataset). */
  row(): void {
    this.count++;
  }

  add(status: SampleStatus, errorMessage: string | null): void {
    if (status === 'success') {
      this.successes++;
      this.statusDict.add('success');
    } else {
      if (status === 'failed_to_download') this.failedToDownload++;
      else this.failedToResize++;
      this.statusDict.add(errorMessage ?? status);
    }
  }

  finish(): ShardStatsJson {
    this.endTime = nowSeconds();
    return {
      count: this.count,
      successes: this.successes,
      failed_to_download: this.failedToDownload,
      failed_to_resize: this.failedToResize,
      duration: this.endTime - this.startTime,
      start_time: this.startTime,
      end_time: this.endTime,
      status_dict: this.statusDict.toObject(),
    };
  }
}

/** The file's bytes: `json.dump(stats, f, indent=4)`, times as Python floats. */
export function formatStatsJson(s: ShardStatsJson): string {
  return pyJsonDumps(
    {
      count: s.count,
      successes: s.successes,
      failed_to_download: s.failed_to_download,
      failed_to_resize: s.failed_to_resize,
      duration: new PyFloat(s.duration),
      start_time: new PyFloat(s.start_time),
      end_time: new PyFloat(s.end_time),
      status_dict: s.status_dict,
    },
    4,
  );
}

/** img2dataset's logger line: `worker  - success: 0.807 - failed to download: ... - count: 10000`. */
export function loggerLine(prefix: string, s: { count: number; successes: number; failed_to_download: number; failed_to_resize: number }, seconds: number): string {
  const ratio = (n: number): string => (s.count ? n / s.count : 0).toFixed(3);
  return [
    prefix.padEnd(7),
    `success: ${ratio(s.successes)}`,
    `failed to download: ${ratio(s.failed_to_download)}`,
    `failed to resize: ${ratio(s.failed_to_resize)}`,
    `images per sec: ${seconds > 0 ? Math.round(s.count / seconds) : 0}`,
    `count: ${s.count}`,
  ].join(' - ');
}

/** Totals over the shards finished in this run. */
export class RunSummary {
  count = 0;
  successes = 0;
  failed_to_download = 0;
  failed_to_resize = 0;
  shardsDone = 0;
  private minStart = Infinity;
  private maxEnd = 0;
  readonly statusDict = new CappedCounter();

  addShard(s: ShardStatsJson): void {
    this.shardsDone++;
    this.count += s.count;
    this.successes += s.successes;
    this.failed_to_download += s.failed_to_download;
    this.failed_to_resize += s.failed_to_resize;
    this.minStart = Math.min(this.minStart, s.start_time);
    this.maxEnd = Math.max(this.maxEnd, s.end_time);
    this.statusDict.merge(s.status_dict);
  }

  totalLine(): string {
    return loggerLine('total', this, this.maxEnd > this.minStart ? this.maxEnd - this.minStart : 0);
  }

  /** The final block: totals, then every status/error message with its count, most frequent first. */
  format(): string {
    const lines = [this.totalLine(), `shards finished in this run: ${this.shardsDone}`, 'status counts:'];
    const entries = this.statusDict.entries().sort((a, b) => b[1] - a[1]);
    const width = Math.max(0, ...entries.map(([, n]) => String(n).length));
    for (const [msg, n] of entries) lines.push(`  ${String(n).padStart(width)}  ${msg.replace(/\s*\n\s*/g, ' ')}`);
    return lines.join('\n');
  }
}

/** Epoch seconds with sub-millisecond digits, like Python's time.time(). */
function nowSeconds(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}
