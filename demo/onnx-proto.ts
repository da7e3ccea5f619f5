// A minimal ONNX protobuf encoder, enough for the generated models of demo/tiny-clip.ts and
// bench/clip-vit-shaped.ts: ModelProto, GraphProto, NodeProto with int / ints attributes,
// TensorProto with raw data, ValueInfoProto with fixed or symbolic dimensions.

export type Field = [num: number, value: Uint8Array | number | bigint | string | Field[]];

function varint(n: bigint | number): Buffer {
  let v = BigInt(n);
  if (v < 0n) v += 1n << 64n; // two's complement, as protobuf encodes negative int64
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return Buffer.from(out);
}

/** Numbers and bigints are varints; strings, bytes and nested field lists are length-delimited. */
export function encode(fields: Field[]): Buffer {
  const parts: Buffer[] = [];
  for (const [num, value] of fields) {
    if (typeof value === 'number' || typeof value === 'bigint') {
      parts.push(varint((num << 3) | 0), varint(value));
      continue;
    }
    const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value instanceof Uint8Array ? value : encode(value);
    parts.push(varint((num << 3) | 2), varint(bytes.length), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  return Buffer.concat(parts);
}

export const FLOAT = 1;
export const INT64 = 7;

export function tensor(name: string, dims: number[], data: Float32Array | BigInt64Array): Field[] {
  return [
    ...dims.map((d): Field => [1, d]),
    [2, data instanceof Float32Array ? FLOAT : INT64],
    [8, name],
    [9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength)],
  ];
}

export function valueInfo(name: string, elemType: number, dims: (number | string)[]): Field[] {
  const shape: Field[] = dims.map((d): Field => [1, typeof d === 'number' ? [[1, d]] : [[2, d]]]);
  return [[1, name], [2, [[1, [[1, elemType], [2, shape]]]]]];
}

export interface Attr {
  ints?: number[];
  i?: number;
}

export function node(op: string, inputs: string[], outputs: string[], attrs: Record<string, Attr> = {}): Field[] {
  const f: Field[] = [...inputs.map((s): Field => [1, s]), ...outputs.map((s): Field => [2, s]), [3, `${op}_${outputs[0]}`], [4, op]];
  for (const [name, a] of Object.entries(attrs)) {
    if (a.ints) f.push([5, [[1, name], ...a.ints.map((v): Field => [8, v]), [20, 7]]]);
    else f.push([5, [[1, name], [3, a.i ?? 0], [20, 2]]]);
  }
  return f;
}

/** A model of one graph; IR version 8, the default ONNX domain at `opset`. */
export function model(graphName: string, nodes: Field[][], initializers: Field[][], inputs: Field[][], outputs: Field[][], opset = 13): Buffer {
  const graph: Field[] = [
    ...nodes.map((n): Field => [1, n]),
    [2, graphName],
    ...initializers.map((t): Field => [5, t]),
    ...inputs.map((v): Field => [11, v]),
    ...outputs.map((v): Field => [12, v]),
  ];
  return encode([[1, 8], [2, 'cah-prepro'], [7, graph], [8, [[1, ''], [2, opset]]]]);
}
