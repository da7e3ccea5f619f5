// A model folder whose image tower has ViT-B/32's architecture and size (OpenAI CLIP: 224 px,
// 32 px patches, width 768, 12 layers, 12 heads, MLP 3072, QuickGELU, projection to 512) with
// random weights, written by our own ONNX encoder (no Python, no download), plus the tiny text
// tower. It tells what `inference` does per image when the model costs what a real one costs on
// this CPU; embeddings are meaningless. The comparison with open_clip in PyTorch is
// bench/clip-inference.ts's job (needs a torch venv).
//   npx tsx bench/clip-vit-shaped.ts OUT_DIR
//   npx tsx embeddings-indices-hosting/run.ts inference --clip-model OUT_DIR --enable-text False ...
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeTinyClip } from '../demo/tiny-clip.ts';
import { FLOAT, model, node, tensor, valueInfo, type Field } from '../demo/onnx-proto.ts';

const SIZE = 224;
const PATCH = 32;
const WIDTH = 768;
const LAYERS = 12;
const HEADS = 12;
const MLP = 3072;
const EMBED = 512;
const TOKENS = (SIZE / PATCH) ** 2 + 1;

// Deterministic weights: a small LCG, scaled like CLIP's init (std about 0.02).
let seed = 12345;
function randn(n: number, std = 0.02): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    a[i] = ((seed / 2 ** 32) * 2 - 1) * std * 1.732; // uniform with the given std
  }
  return a;
}
const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
const zeros = (n: number): Float32Array => new Float32Array(n);
const i64 = (...v: number[]): BigInt64Array => BigInt64Array.from(v.map(BigInt));

export function writeVitShapedClip(dir: string): void {
  writeTinyClip(dir); // tokenizer, text tower, config files
  const nodes: Field[][] = [];
  const inits: Field[][] = [];
  const w = (name: string, dims: number[], data: Float32Array | BigInt64Array): string => {
    inits.push(tensor(name, dims, data));
    return name;
  };
  const layerNorm = (x: string, name: string): string => {
    nodes.push(node('LayerNormalization', [x, w(`${name}.g`, [WIDTH], ones(WIDTH)), w(`${name}.b`, [WIDTH], zeros(WIDTH))], [`${name}.out`], { axis: { i: -1 } }));
    return `${name}.out`;
  };
  const linear = (x: string, name: string, inDim: number, outDim: number): string => {
    nodes.push(node('MatMul', [x, w(`${name}.w`, [inDim, outDim], randn(inDim * outDim))], [`${name}.mm`]));
    nodes.push(node('Add', [`${name}.mm`, w(`${name}.b`, [outDim], zeros(outDim))], [`${name}.out`]));
    return `${name}.out`;
  };

  // Patches: conv 32x32 stride 32 -> [N, 768, 7, 7] -> [N, 49, 768]; a zero row in front takes the
  // class token, which the positional table's row 0 then supplies (class_embedding + pos[0]).
  nodes.push(node('Conv', ['pixel_values', w('conv1.w', [WIDTH, 3, PATCH, PATCH], randn(WIDTH * 3 * PATCH * PATCH))], ['patches'], { kernel_shape: { ints: [PATCH, PATCH] }, strides: { ints: [PATCH, PATCH] } }));
  nodes.push(node('Reshape', ['patches', w('patches.shape', [3], i64(0, WIDTH, TOKENS - 1))], ['patches.flat']));
  nodes.push(node('Transpose', ['patches.flat'], ['tokens0'], { perm: { ints: [0, 2, 1] } }));
  nodes.push(node('Pad', ['tokens0', w('cls.pads', [6], i64(0, 1, 0, 0, 0, 0))], ['tokens1']));
  nodes.push(node('Add', ['tokens1', w('pos', [TOKENS, WIDTH], randn(TOKENS * WIDTH))], ['tokens2']));
  let x = layerNorm('tokens2', 'ln_pre');

  const headShape = w('heads.shape', [4], i64(0, TOKENS, HEADS, WIDTH / HEADS));
  const mergeShape = w('merge.shape', [3], i64(0, TOKENS, WIDTH));
  const split = w('qkv.split', [3], i64(WIDTH, WIDTH, WIDTH));
  const scale = w('attn.scale', [], Float32Array.of(1 / Math.sqrt(WIDTH / HEADS)));
  const gelu = w('gelu.k', [], Float32Array.of(1.702));
  for (let l = 0; l < LAYERS; l++) {
    const p = `l${l}`;
    const y = layerNorm(x, `${p}.ln1`);
    const qkv = linear(y, `${p}.qkv`, WIDTH, 3 * WIDTH);
    nodes.push(node('Split', [qkv, split], [`${p}.q`, `${p}.k`, `${p}.v`], { axis: { i: 2 } }));
    for (const t of ['q', 'k', 'v']) nodes.push(node('Reshape', [`${p}.${t}`, headShape], [`${p}.${t}h`]));
    nodes.push(node('Transpose', [`${p}.qh`], [`${p}.qt`], { perm: { ints: [0, 2, 1, 3] } }));
    nodes.push(node('Transpose', [`${p}.kh`], [`${p}.kt`], { perm: { ints: [0, 2, 3, 1] } }));
    nodes.push(node('Transpose', [`${p}.vh`], [`${p}.vt`], { perm: { ints: [0, 2, 1, 3] } }));
    nodes.push(node('MatMul', [`${p}.qt`, `${p}.kt`], [`${p}.scores`]));
    nodes.push(node('Mul', [`${p}.scores`, scale], [`${p}.scaled`]));
    nodes.push(node('Softmax', [`${p}.scaled`], [`${p}.attn`], { axis: { i: -1 } }));
    nodes.push(node('MatMul', [`${p}.attn`, `${p}.vt`], [`${p}.ctx`]));
    nodes.push(node('Transpose', [`${p}.ctx`], [`${p}.ctxt`], { perm: { ints: [0, 2, 1, 3] } }));
    nodes.push(node('Reshape', [`${p}.ctxt`, mergeShape], [`${p}.ctxm`]));
    const o = linear(`${p}.ctxm`, `${p}.out`, WIDTH, WIDTH);
    nodes.push(node('Add', [x, o], [`${p}.res1`]));
    const z = layerNorm(`${p}.res1`, `${p}.ln2`);
    const h = linear(z, `${p}.fc`, WIDTH, MLP);
    // QuickGELU: h * sigmoid(1.702 h), as OpenAI's CLIP.
    nodes.push(node('Mul', [h, gelu], [`${p}.hk`]));
    nodes.push(node('Sigmoid', [`${p}.hk`], [`${p}.sig`]));
    nodes.push(node('Mul', [h, `${p}.sig`], [`${p}.act`]));
    const m = linear(`${p}.act`, `${p}.proj`, MLP, WIDTH);
    nodes.push(node('Add', [`${p}.res1`, m], [`${p}.res2`]));
    x = `${p}.res2`;
  }
  nodes.push(node('Gather', [x, w('cls.index', [], i64(0))], ['cls'], { axis: { i: 1 } }));
  const c = layerNorm('cls', 'ln_post');
  nodes.push(node('MatMul', [c, w('proj', [WIDTH, EMBED], randn(WIDTH * EMBED))], ['image_embeds']));

  const bytes = model('vit_b32_shaped_vision', nodes, inits, [valueInfo('pixel_values', FLOAT, ['batch_size', 3, SIZE, SIZE])], [valueInfo('image_embeds', FLOAT, ['batch_size', EMBED])], 17);
  writeFileSync(join(dir, 'onnx', 'vision_model.onnx'), bytes);
  writeFileSync(
    join(dir, 'preprocessor_config.json'),
    JSON.stringify({
      crop_size: { height: SIZE, width: SIZE }, do_center_crop: true, do_convert_rgb: true, do_normalize: true, do_rescale: true, do_resize: true,
      image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711], resample: 3, rescale_factor: 1 / 255, size: { shortest_edge: SIZE },
    }),
  );
}

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: npx tsx bench/clip-vit-shaped.ts OUT_DIR\n');
  process.exit(2);
}
mkdirSync(dir, { recursive: true });
writeVitShapedClip(dir);
process.stdout.write(`wrote ${dir} (image tower ViT-B/32-shaped, random weights; text tower tiny)\n`);
