// Runs a command and measures what a user would: wall time, CPU seconds of the whole process tree
// (GNU time counts every waited-for descendant) and the peak of the tree's summed RSS (sampled from
// /proc, since both peers run several processes).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface TreeRun {
  code: number | null;
  seconds: number;
  cpuSeconds: number;
  /** Peak of the sum of RSS over the process tree, in MB. */
  peakTreeRssMb: number;
  stderrTail: string;
}

/** RSS of a process and all its descendants, summed, in KB, from /proc. */
export function treeRssKb(root: number): number {
  const parent = new Map<number, number>();
  const rss = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(name), Number(fields[1]));
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const m = /VmRSS:\s+(\d+)/.exec(status);
      rss.set(Number(name), m ? Number(m[1]) : 0);
    } catch {
      // the process ended while we looked
    }
  }
  let total = 0;
  for (const pid of rss.keys()) {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        total += rss.get(pid) ?? 0;
        break;
      }
    }
  }
  return total;
}

export function runMeasured(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<TreeRun> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const child = spawn('/usr/bin/time', ['-f', 'CPUTIME %U %S', cmd, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-20_000);
    });
    let peak = 0;
    const timer = setInterval(() => {
      if (child.pid) peak = Math.max(peak, treeRssKb(child.pid));
    }, 250);
    child.on('close', (code) => {
      clearInterval(timer);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const m = /CPUTIME ([\d.]+) ([\d.]+)/.exec(err);
      resolve({ code, seconds, cpuSeconds: m ? Number(m[1]) + Number(m[2]) : NaN, peakTreeRssMb: peak / 1024, stderrTail: err.slice(-3000) });
    });
  });
}
