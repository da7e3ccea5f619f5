import assert from 'node:assert/strict';
import { test } from 'node:test';
import { elementsOf, expandBraces, flattenJson, partitionName } from '../embeddings-indices-hosting/inference/sources.ts';

test('brace patterns expand as python braceexpand: zero-padded ranges, lists, nesting order', () => {
  assert.deepEqual(expandBraces('out/{00000..00003}.tar'), ['out/00000.tar', 'out/00001.tar', 'out/00002.tar', 'out/00003.tar']);
  assert.deepEqual(expandBraces('{8..11}.tar'), ['8.tar', '9.tar', '10.tar', '11.tar']);
  assert.deepEqual(expandBraces('{a,b}/{0..1}'), ['a/0', 'a/1', 'b/0', 'b/1']);
  assert.deepEqual(expandBraces('plain.tar'), ['plain.tar']);
  assert.deepEqual(expandBraces('x{y}z'), ['x{y}z']);
});

test('partitions: element i to partition i % n, names zero-padded to int(log10(n)) + 1', () => {
  const source = { elements: ['a', 'b', 'c', 'd', 'e'] } as Parameters<typeof elementsOf>[0];
  assert.deepEqual(elementsOf(source, 0, 2), ['a', 'c', 'e']);
  assert.deepEqual(elementsOf(source, 1, 2), ['b', 'd']);
  assert.deepEqual([partitionName(0, 1), partitionName(3, 9), partitionName(3, 10), partitionName(42, 100)], ['0', '3', '03', '042']);
});

test('json sidecars flatten as pandas json_normalize', () => {
  assert.deepEqual(flattenJson({ url: 'u', exif: { a: 1, b: { c: true } }, list: [1, 2] }), { url: 'u', 'exif.a': 1, 'exif.b.c': true, list: [1, 2] });
});
