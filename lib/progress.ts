// The one-line progress meter: items/s, bytes/s, success rate and ETA. On a terminal the line is
// redrawn in place at most once a second; otherwise a plain line is printed every `plainEveryMs`.
import { setLiveLine } from './log.ts';

export interface ProgressOptions {
  label: string;
  /** Items expected, for the ETA; may be raised later with setTotal. */
  total?: number;
  /** Bytes expected, for a byte-based ETA when items are few and large. */
  totalBytes?: number;
  stream?: NodeJS.WriteStream;
  plainEveryMs?: number;
  /** Noun for items in the line, e.g. "files" or "img". */
  unit?: string;
}

export interface ProgressSnapshot {
  done: number;
  ok: number;
  failed: number;
  bytes: number;
  seconds: number;
}

export class Progress {
  private readonly start = Date.now();
  private done = 0;
  private ok = 0;
  private failed = 0;
  private bytes = 0;
  private total: number | undefined;
  private totalBytes: number | undefined;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly timer: NodeJS.Timeout;
  private lastPlain = 0;
  private drawn = false;

  constructor(private readonly opts: ProgressOptions) {
    this.total = opts.total;
    this.totalBytes = opts.totalBytes;
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
    if (this.tty) setLiveLine({ clear: () => this.clear(), redraw: () => this.draw() });
  }

  setTotal(total: number, totalBytes?: number): void {
    this.total = total;
    if (totalBytes !== undefined) this.totalBytes = totalBytes;
  }

  addBytes(n: number): void {
    this.bytes += n;
  }

  /** Records `count` finished items (one by default). */
  item(success: boolean, count = 1): void {
    this.done += count;
    if (success) this.ok += count;
    else this.failed += count;
  }

  snapshot(): ProgressSnapshot {
    return { done: this.done, ok: this.ok, failed: this.failed, bytes: this.bytes, seconds: (Date.now() - this.start) / 1000 };
  }

  line(): string {
    const s = this.snapshot();
    const secs = Math.max(s.seconds, 1e-3);
    const unit = this.opts.unit ?? 'items';
    const parts = [`${this.opts.label}: ${s.done}${this.total !== undefined ? `/${this.total}` : ''} ${unit}`];
    parts.push(`${(s.done / secs).toFixed(1)} ${unit}/s`);
    if (s.bytes > 0) parts.push(`${formatBytes(s.bytes / secs)}/s`);
    if (s.done > 0) parts.push(`success ${((100 * s.ok) / s.done).toFixed(1)}%`);
    const eta = this.eta(s);
    if (eta !== undefined) parts.push(`ETA ${formatDuration(eta)}`);
    parts.push(`elapsed ${formatDuration(s.seconds)}`);
    return parts.join(' | ');
  }

  private eta(s: ProgressSnapshot): number | undefined {
    if (this.totalBytes && s.bytes > 0) return Math.max(0, ((this.totalBytes - s.bytes) * s.seconds) / s.bytes);
    if (this.total !== undefined && s.done > 0) return Math.max(0, ((this.total - s.done) * s.seconds) / s.done);
    return undefined;
  }

  private tick(): void {
    if (this.tty) this.draw();
    else if (Date.now() - this.lastPlain >= (this.opts.plainEveryMs ?? 10_000)) {
      this.lastPlain = Date.now();
      this.stream.write(this.line() + '\n');
    }
  }

  private draw(): void {
    if (!this.tty) return;
    this.stream.write(`\r\x1b[2K${this.line()}`);
    this.drawn = true;
  }

  private clear(): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[2K');
  }

  /** Stops the meter and prints the last line. */
  stop(): ProgressSnapshot {
    clearInterval(this.timer);
    if (this.tty) {
      this.clear();
      setLiveLine(null);
    }
    this.stream.write(this.line() + '\n');
    return this.snapshot();
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
