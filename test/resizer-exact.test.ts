import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { dctScaleDenom } from '../lib/image-ops/index.ts';
import { createResizer, DEFAULT_RESIZER_OPTIONS, planResize, resolveEngine, type ResizeMode } from '../download_images/resizer.ts';

const REF_DIR = new URL('../../shared/data/img2dataset-tests/resize_test_image/', import.meta.url).pathname;

// sha256 of img2dataset 1.47's output (default options, image_size 256) for its own test images:
// printed by bench/interop/img2dataset-resizer-hashes.py in a venv with img2dataset==1.47.0
// (opencv-python-headless 4.x). Shrinks (area), enlargements (lanczos) and re-encodes are all here.
const IMG2DATASET_SHA256: Record<string, string> = {
  '123_456.jpg border': 'bead77f43ee9c7462718c0c66f23d45ed2bf79cac28a17f609120c93b84d8a91',
  '208_495.jpg border': '4160cdad7cac1c96ecf9294e84258646787a00ba344291bd6bbeb0990d19ba66',
  '321_421.jpg border': 'bdd8f27137642c3394748996f8bf5822eff8ba9e4066dd1629c0deacf04ebf61',
  '389_535.jpg border': '20674f796aaff720cc9ed47e2f4f9686b66aecd3e1f5e2ea0cdda5a52360b478',
  '416_264.jpg border': 'd000e0bff7e7b31580543b5dc0aa32ba2d082fb6c5e30cdafd2e04c13fb320f4',
  '456_123.jpg border': '3ddf302aca1eb82b8d0da132f12966defe58de944cf81beca113a51c0a003d41',
  '524_316.jpg border': '34895cc2d8dc9310801d1fce590a0bad69e100feb64bb481daba8161d4eadaa4',
  '123_456.jpg keep_ratio': '5c60ea614c836cf29b6e26d8b69811b741e7e5c56e4fb6a5de039e7dea540649',
  '208_495.jpg keep_ratio': '9423dae932753e9e14e1551b1796c53ebd5f29f1c5bcadd0de3a0fa1cf546420',
  '321_421.jpg keep_ratio': 'ef51c352bcb84554e1042ae3e79d7b51b65cb843a690982a84de8cb256f90b0e',
  '389_535.jpg keep_ratio': '956e80999800f68138258810110129823fc798d913b17f1b247c441531b23f23',
  '416_264.jpg keep_ratio': '21a04da0920bddc62df8d395b07696f7c378d1a0266f339ad205d9f5b3cdf670',
  '456_123.jpg keep_ratio': 'e2643782ee2f5be7d0add07a9f8d2abdb38d5f4846e600ad063a0d4810d020b8',
  '524_316.jpg keep_ratio': 'd16cd2eafb0b517fe2539de20a511b1f7dfdd821ef17ffc88ee36d9767bc769f',
  '123_456.jpg center_crop': 'c8a6ad5b313a246ca6c300fc163a03c02244a196caa3f16b5b8f0b5b77ad0caf',
  '208_495.jpg center_crop': '6a1d7e34cd82da7f4f9ee6ccaa542720319a5b163bff2b8ef79547a3c33ffabf',
  '321_421.jpg center_crop': 'ff9b37acc16f2382ec54b177930b00c7e2499e44c96718c72fb37a762802737b',
  '389_535.jpg center_crop': '462d61cd3fb51db066ea1b19e3d30336f0ccf750d01909282f6e579bf02c1db2',
  '416_264.jpg center_crop': '7f71065ca74a4b7b75ceb208013c862c1493a739d5270f1b394f85d622ed0b77',
  '456_123.jpg center_crop': 'c77c32e7ed2b2bb4e4755af13be641705c74bc4d829f1ac75ab50dfd6f0169a9',
  '524_316.jpg center_crop': '0d178b68711b4dc8521d5883575b65cf007fcb8b8c1d4614a3bc7c9356d5aff9',
  '123_456.jpg keep_ratio_largest': 'babb419fe0be44ca15620d268f3751cac5faee84a9f306b79ba5689d2837e0a3',
  '208_495.jpg keep_ratio_largest': '33a74577741066c1acaa24166555b61c2b9f9777acb9fadf567ba7df835324f6',
  '321_421.jpg keep_ratio_largest': '1c3c75142d6f5befeb2beff763734448629e2232349d56e1bef9f6d2618d5e51',
  '389_535.jpg keep_ratio_largest': '581ddc71a437d66171243c2ff7ae5246340b721794a8ef25666090c4094abc24',
  '416_264.jpg keep_ratio_largest': '58dfe7dbe62314aa802c4a402a140e277071f29917c8db50fff25f925924bcfb',
  '456_123.jpg keep_ratio_largest': '92dd8e6433eebc226c044f95213c72eaa68ce096ccaaf49dcd8a7279ec327b03',
  '524_316.jpg keep_ratio_largest': 'b61f9a5a583076c3ae68d00cfd8a7a7042aa42706fa901c37b513abeda7b78e5',
  '123_456.jpg no': '046860748674f010be950933936fa2fea52828354d7dc6008fa6cad5915a8417',
  '208_495.jpg no': 'f0d6910a6ee7fbbc42e7e4e21dadbef78582d928a24ae23f56ed7a30ec76ccd7',
  '321_421.jpg no': '91304d3e1dab25c7f7cd72789527dc59313cef854c731e9b0156f633f49b0ca1',
  '389_535.jpg no': 'c41c09f234db8440e3325b77844cc9626a70e286cc57ab549354de29d5cbcc96',
  '416_264.jpg no': '39524b5dd587e82cd9f42658851bc2c02944948a81f30bcedd3745e0e18d65b3',
  '456_123.jpg no': '7e9adba3ae0142bdc3e14b0eb6f72ba8eda4b3c8bc50867d91ca4b2f5cad6b47',
  '524_316.jpg no': 'a906485a3b0af4c120347ba4d6bb20c1d2f0a5d31e507670a5e27c54307e11b1',
};

test('the exact engine gives img2dataset\'s bytes for every mode and test image', { skip: !existsSync(REF_DIR) && 'shared test data absent' }, async () => {
  assert.equal(resolveEngine('exact').engine, 'exact', resolveEngine('exact').note ?? '');
  const differ: string[] = [];
  for (const [key, expected] of Object.entries(IMG2DATASET_SHA256)) {
    const [file, mode] = key.split(' ') as [string, ResizeMode];
    const r = await createResizer({ ...DEFAULT_RESIZER_OPTIONS, engine: 'exact', resizeMode: mode })(readFileSync(REF_DIR + file));
    assert.equal(r.error, null, key);
    if (createHash('sha256').update(r.image!).digest('hex') !== expected) differ.push(key);
  }
  assert.deepEqual(differ, []);
});

test('the fast engine gives the same bytes wherever it does not decode at reduced size', { skip: !existsSync(REF_DIR) && 'shared test data absent' }, async () => {
  const differ: string[] = [];
  const scaled: string[] = [];
  for (const [key, expected] of Object.entries(IMG2DATASET_SHA256)) {
    const [file, mode] = key.split(' ') as [string, ResizeMode];
    const [w, h] = file.replace('.jpg', '').split('_').map(Number) as [number, number];
    const plan = planResize(w, h, mode, 256, false);
    if (plan.resized && plan.downscale && dctScaleDenom(w, h, plan.resizedWidth, plan.resizedHeight) > 1) scaled.push(key);
    const r = await createResizer({ ...DEFAULT_RESIZER_OPTIONS, engine: 'fast', resizeMode: mode })(readFileSync(REF_DIR + file));
    if (createHash('sha256').update(r.image!).digest('hex') !== expected) differ.push(key);
  }
  assert.ok(scaled.length > 0 && scaled.length < Object.keys(IMG2DATASET_SHA256).length);
  assert.deepEqual(differ, scaled);
});
