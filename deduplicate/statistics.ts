// The statistics of contracts.md section 2 over parquet parts, computed by DuckDB in bounded memory:
// quantiles come from per-value counts (a spillable GROUP BY plus a running sum), not from an
// in-memory quantile aggregate that would hold every value of a 400M-row column.
import type { Db } from '../lib/parquet.ts';
import { sqlIdent } from '../lib/parquet.ts';

export const QUANTILES = [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1] as const;
export const SIDE_THRESHOLDS = [256, 512, 1024] as const;

/** Measured columns: output name -> SQL expression over one row. */
export const MEASURES: Record<string, string> = {
  WIDTH: 'WIDTH',
  HEIGHT: 'HEIGHT',
  similarity: 'similarity',
  caption_length: 'length(TEXT)',
};

export interface Histogram {
  /** Lower edge of each bin; the last bin also holds everything above it. */
  bins: { from: number; count: number }[];
  binWidth: number;
}

export interface DatasetStats {
  rows: number;
  /** column -> { "p0": v, "p0.05": v, ..., "p1": v }; null when the column has no values. */
  quantiles: Record<string, Record<string, number | null>>;
  /** Non-null values per measured column. */
  non_null: Record<string, number>;
  /** `min_side_ge_256`: both sides >= 256; `max_side_ge_256`: at least one side >= 256. */
  resolution: Record<string, number>;
  nsfw: Record<string, number>;
  /** The 50 most common licences; the rest summed under "(other)". */
  license: Record<string, number>;
  histograms: Record<string, Histogram>;
}

const HISTOGRAMS: Record<string, { binWidth: number; max: number }> = {
  WIDTH: { binWidth: 64, max: 4096 },
  HEIGHT: { binWidth: 64, max: 4096 },
  similarity: { binWidth: 0.01, max: 1 },
  caption_length: { binWidth: 10, max: 500 },
};

/** The value at 0-based position ceil(n * q) - 1 of the sorted non-null values, as DuckDB's quantile_disc. */
async function exactQuantiles(db: Db, source: string, expr: string): Promise<{ n: number; q: Record<string, number | null> }> {
  const qs = QUANTILES.map((q) => `(${q})`).join(', ');
  const rows = await db.all<{ q: number; v: number | null; n: bigint }>(`
    WITH counts AS (SELECT ${expr} AS v, count(*) AS c FROM ${source} WHERE ${expr} IS NOT NULL GROUP BY 1),
         running AS (SELECT v, sum(c) OVER (ORDER BY v ROWS UNBOUNDED PRECEDING) AS upto FROM counts),
         total AS (SELECT coalesce(sum(c), 0) AS n FROM counts),
         wanted AS (SELECT q, greatest(ceil(n::DOUBLE * q::DOUBLE) - 1, 0) AS pos, n FROM (VALUES ${qs}) t(q), total)
    SELECT q, (SELECT min(v) FROM running WHERE upto > pos) AS v, n FROM wanted ORDER BY q`);
  const q: Record<string, number | null> = {};
  for (const r of rows) q[`p${r.q}`] = r.v === null ? null : Number(r.v);
  return { n: Number(rows[0]?.n ?? 0), q };
}

async function valueCounts(db: Db, source: string, column: string, limit?: number): Promise<Record<string, number>> {
  const rows = await db.all<{ v: string | null; n: bigint }>(
    `SELECT ${sqlIdent(column)} AS v, count(*) AS n FROM ${source} GROUP BY 1 ORDER BY n DESC, v NULLS FIRST`,
  );
  const out: Record<string, number> = {};
  rows.forEach((r, i) => {
    const key = limit !== undefined && i >= limit ? '(other)' : r.v === null ? '(null)' : r.v;
    out[key] = (out[key] ?? 0) + Number(r.n);
  });
  return out;
}

export async function computeStats(db: Db, source: string): Promise<DatasetStats> {
  const [{ rows }] = (await db.all<{ rows: bigint }>(`SELECT count(*) AS rows FROM ${source}`)) as [{ rows: bigint }];
  const quantiles: DatasetStats['quantiles'] = {};
  const nonNull: Record<string, number> = {};
  for (const [name, expr] of Object.entries(MEASURES)) {
    const r = await exactQuantiles(db, source, expr);
    quantiles[name] = r.q;
    nonNull[name] = r.n;
  }
  const resolutionCols = SIDE_THRESHOLDS.flatMap((t) => [
    `count(*) FILTER (WHERE WIDTH >= ${t} AND HEIGHT >= ${t}) AS min_side_ge_${t}`,
    `count(*) FILTER (WHERE WIDTH >= ${t} OR HEIGHT >= ${t}) AS max_side_ge_${t}`,
  ]);
  const [res] = await db.all<Record<string, bigint>>(`SELECT ${resolutionCols.join(', ')} FROM ${source}`);
  const resolution = Object.fromEntries(Object.entries(res!).map(([k, v]) => [k, Number(v)]));

  const histograms: Record<string, Histogram> = {};
  for (const [name, h] of Object.entries(HISTOGRAMS)) {
    const expr = MEASURES[name]!;
    const bins = await db.all<{ b: number; n: bigint }>(`
      SELECT floor(least(greatest(${expr}, 0), ${h.max}) / ${h.binWidth})::BIGINT AS b, count(*) AS n
      FROM ${source} WHERE ${expr} IS NOT NULL GROUP BY 1 ORDER BY 1`);
    histograms[name] = {
      binWidth: h.binWidth,
      bins: bins.map((r) => ({ from: Math.round(Number(r.b) * h.binWidth * 1e6) / 1e6, count: Number(r.n) })),
    };
  }
  return {
    rows: Number(rows),
    quantiles,
    non_null: nonNull,
    resolution,
    nsfw: await valueCounts(db, source, 'NSFW'),
    license: await valueCounts(db, source, 'LICENSE', 50),
    histograms,
  };
}

export function statsMarkdown(s: DatasetStats, source: string): string {
  const lines = [`# Dataset statistics`, '', `Source: \`${source}\`, ${s.rows} rows.`, '', '## Quantiles', ''];
  lines.push(`| column | non-null | ${QUANTILES.map((q) => `p${q}`).join(' | ')} |`);
  lines.push(`|---|---|${QUANTILES.map(() => '---').join('|')}|`);
  for (const [name, q] of Object.entries(s.quantiles)) {
    lines.push(`| ${name} | ${s.non_null[name]} | ${QUANTILES.map((p) => q[`p${p}`] ?? '').join(' | ')} |`);
  }
  lines.push('', '## Resolution (WIDTH and HEIGHT as stored)', '', '| side | both sides >= (min side) | one side >= (max side) |', '|---|---|---|');
  for (const t of SIDE_THRESHOLDS) lines.push(`| ${t} | ${s.resolution[`min_side_ge_${t}`]} | ${s.resolution[`max_side_ge_${t}`]} |`);
  for (const [title, counts] of [['NSFW', s.nsfw], ['LICENSE', s.license]] as const) {
    lines.push('', `## ${title}`, '', '| value | rows |', '|---|---|');
    for (const [v, n] of Object.entries(counts)) lines.push(`| ${v.replace(/\|/g, '\\|')} | ${n} |`);
  }
  return lines.join('\n') + '\n';
}
