// Plots of the statistics: vega-lite specs rendered headless by vega to SVG, then to PNG by sharp.
// The data are the pre-binned counts from statistics.ts, so a plot never carries raw rows.
import sharp from 'sharp';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { SIDE_THRESHOLDS, type DatasetStats, type Histogram } from './statistics.ts';

export interface Plot {
  /** File name without extension. */
  name: string;
  svg: string;
  png: Buffer;
}

const TITLES: Record<string, string> = {
  WIDTH: 'WIDTH (as stored: the image height, see README)',
  HEIGHT: 'HEIGHT (as stored: the image width, see README)',
  similarity: 'CLIP similarity',
  caption_length: 'caption length (characters)',
};

function histogramSpec(title: string, h: Histogram): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 640,
    height: 300,
    background: 'white',
    data: { values: h.bins.map((b) => ({ from: b.from, to: b.from + h.binWidth, count: b.count })) },
    mark: { type: 'bar', color: '#4c78a8' },
    encoding: {
      x: { field: 'from', type: 'quantitative', bin: { binned: true, step: h.binWidth }, title: `${title} (last bin: that value and above)` },
      x2: { field: 'to' },
      y: { field: 'count', type: 'quantitative', title: 'rows' },
    },
  };
}

function resolutionSpec(s: DatasetStats): TopLevelSpec {
  const values = SIDE_THRESHOLDS.flatMap((t) => [
    { threshold: `>= ${t}`, kind: 'both sides', count: s.resolution[`min_side_ge_${t}`] ?? 0 },
    { threshold: `>= ${t}`, kind: 'at least one side', count: s.resolution[`max_side_ge_${t}`] ?? 0 },
  ]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `Resolution buckets (${s.rows} rows)`,
    width: 360,
    height: 300,
    background: 'white',
    data: { values },
    mark: 'bar',
    encoding: {
      x: { field: 'threshold', type: 'nominal', sort: null, title: 'pixels' },
      xOffset: { field: 'kind' },
      color: { field: 'kind', type: 'nominal', title: null },
      y: { field: 'count', type: 'quantitative', title: 'rows' },
    },
  };
}

async function render(name: string, spec: TopLevelSpec): Promise<Plot> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const png = await sharp(Buffer.from(svg)).png().toBuffer();
  return { name, svg, png };
}

export async function renderPlots(s: DatasetStats): Promise<Plot[]> {
  const plots: Plot[] = [];
  for (const [column, h] of Object.entries(s.histograms)) plots.push(await render(`hist_${column.toLowerCase()}`, histogramSpec(TITLES[column] ?? column, h)));
  plots.push(await render('resolution_buckets', resolutionSpec(s)));
  return plots;
}
