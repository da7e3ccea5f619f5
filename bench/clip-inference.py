"""The PyTorch side of bench/clip-inference.ts: open_clip's ViT-B-32 with random weights, in the
same roles clip-retrieval gives it (open_clip model, its own preprocess and tokenizer, a torch
DataLoader whose workers read the tars and preprocess, the model on the main process).

  python bench/clip-inference.py export MODEL_DIR
      random-init ViT-B-32 (torch.manual_seed(0)), its state_dict, and the two towers as ONNX in
      the Hugging Face layout: onnx/vision_model.onnx (pixel_values -> image_embeds),
      onnx/text_model.onnx (input_ids -> text_embeds), preprocessor_config.json, config.json.
  python bench/clip-inference.py quantize MODEL_DIR
      onnx/vision_model_int8.onnx and onnx/text_model_int8.onnx beside the exported towers:
      onnxruntime's dynamic quantisation with int8 weights (Transformers.js' `int8` variant;
      needs onnxruntime in the venv).
  python bench/clip-inference.py embed MODEL_DIR image|text OUT_PREFIX TAR... [--batch-size 256]
      [--workers 2] [--threads 2]
      embeddings of every sample, OUT_PREFIX.npy (float32, not normalised) + OUT_PREFIX.keys.json;
      prints one JSON line of timings.
  python bench/clip-inference.py decompose MODEL_DIR OUT_DIR OURS_PIXELS_NPY COUNT TAR...
      [--batch-size 256] [--threads 2]
      on the first COUNT samples: open_clip's preprocessing (timed) -> OUT_DIR/torch_pixels.npy;
      the model (timed) on torch's pixels and on ours; the tokenizer and text model (timed).
Written from open_clip's documented API; no code taken from clip-retrieval.
"""
import io
import json
import os
import sys
import tarfile
import time

import numpy as np
import torch
from PIL import Image

import open_clip

ARCH = "ViT-B-32"
STATE = "open_clip_state.pt"


def load_model(model_dir):
    model = open_clip.create_model(ARCH, pretrained=None)
    model.load_state_dict(torch.load(os.path.join(model_dir, STATE), map_location="cpu"))
    model.eval()
    return model


def transforms():
    # The eval transform create_model_and_transforms returns (Resize bicubic, CenterCrop, RGB,
    # ToTensor, Normalize with OpenAI's mean/std for this architecture).
    _, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    return preprocess


def samples(tar_paths):
    """(key, {suffix: bytes}) per sample, members grouped by key as webdataset does."""
    for path in tar_paths:
        with tarfile.open(path) as tf:
            key, members = None, {}
            for m in tf:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                k, _, suffix = base.partition(".")
                if k != key and key is not None:
                    yield key, members
                    members = {}
                key = k
                members[suffix] = tf.extractfile(m).read()
            if key is not None:
                yield key, members


def export(model_dir):
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    model.eval()
    os.makedirs(os.path.join(model_dir, "onnx"), exist_ok=True)
    torch.save(model.state_dict(), os.path.join(model_dir, STATE))

    class Tower(torch.nn.Module):
        """One of the model's encoders (its method `encode`) as the module that ONNX export traces."""

        def __init__(self, m, encode):
            super().__init__()
            self.m = m
            self.encode = encode

        def forward(self, x):
            return getattr(self.m, self.encode)(x)

    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    batch = {0: "batch_size"}
    # nn.MultiheadAttention's fused inference path (aten::_native_multi_head_attention) has no ONNX
    # export; the exported graph spells attention out instead (same arithmetic).
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        torch.onnx.export(
            Tower(model, "encode_image"), (torch.randn(2, 3, size, size),), os.path.join(model_dir, "onnx", "vision_model.onnx"),
            input_names=["pixel_values"], output_names=["image_embeds"],
            dynamic_axes={"pixel_values": batch, "image_embeds": batch}, opset_version=17, dynamo=False,
        )
        ids = open_clip.get_tokenizer(ARCH)(["a photo of a cat", "two dogs"])
        torch.onnx.export(
            Tower(model, "encode_text"), (ids,), os.path.join(model_dir, "onnx", "text_model.onnx"),
            input_names=["input_ids"], output_names=["text_embeds"],
            dynamic_axes={"input_ids": batch, "text_embeds": batch}, opset_version=17, dynamo=False,
        )
    torch.backends.mha.set_fastpath_enabled(True)
    mean = list(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = list(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    with open(os.path.join(model_dir, "preprocessor_config.json"), "w") as f:
        json.dump({
            "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": mean, "image_std": std,
            "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": size},
        }, f)
    embed_dim = model.text_projection.shape[1] if hasattr(model, "text_projection") else None
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump({"model_type": "clip", "open_clip_arch": ARCH, "projection_dim": embed_dim, "weights": "random (torch.manual_seed(0))"}, f)
    print(json.dumps({"torch": torch.__version__, "open_clip": open_clip.__version__, "image_size": size, "embed_dim": embed_dim, "mean": mean, "std": std}))


def quantize(model_dir):
    # Imported here: only this command needs onnxruntime.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for tower in ("vision_model", "text_model"):
        src = os.path.join(model_dir, "onnx", tower + ".onnx")
        dst = os.path.join(model_dir, "onnx", tower + "_int8.onnx")
        quantize_dynamic(src, dst + ".tmp", weight_type=QuantType.QInt8)
        os.replace(dst + ".tmp", dst)
    print(json.dumps({"quantized": "int8 (dynamic, QInt8 weights)"}))


class TarDataset(torch.utils.data.IterableDataset):
    """Each DataLoader worker reads its share of the tars (as webdataset splits shards)."""

    def __init__(self, tars, modality):
        super().__init__()
        self.tars = tars
        self.modality = modality

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.tars[info.id :: info.num_workers] if info else self.tars
        preprocess = transforms() if self.modality == "image" else None
        tokenizer = open_clip.get_tokenizer(ARCH) if self.modality == "text" else None
        for key, m in samples(mine):
            if self.modality == "image":
                yield key, preprocess(Image.open(io.BytesIO(m["jpg"])))
            else:
                yield key, tokenizer([m["txt"].decode("utf-8")])[0]


def embed(model_dir, modality, out_prefix, tars, batch_size, workers, threads):
    t0 = time.time()
    torch.set_num_threads(threads)
    model = load_model(model_dir)
    loaded = time.time()
    loader = torch.utils.data.DataLoader(TarDataset(tars, modality), batch_size=batch_size, num_workers=workers)
    keys, outs = [], []
    with torch.inference_mode():
        for k, x in loader:
            outs.append((model.encode_image(x) if modality == "image" else model.encode_text(x)).float().numpy())
            keys.extend(k)
    done = time.time()
    emb = np.concatenate(outs)
    np.save(out_prefix + ".npy", emb)
    with open(out_prefix + ".keys.json", "w") as f:
        json.dump(keys, f)
    print("RESULT " + json.dumps({"samples": len(keys), "load_s": loaded - t0, "loop_s": done - loaded, "threads": torch.get_num_threads()}), file=sys.stderr)


def decompose(model_dir, out_dir, ours_pixels, count, tars, batch_size, threads):
    torch.set_num_threads(threads)
    model = load_model(model_dir)
    preprocess = transforms()
    tokenizer = open_clip.get_tokenizer(ARCH)
    items = []
    for key, m in samples(tars):
        items.append((key, m["jpg"], m["txt"].decode("utf-8")))
        if len(items) == count:
            break
    t = time.time()
    px = torch.stack([preprocess(Image.open(io.BytesIO(jpg))) for _, jpg, _ in items])
    prepro_s = time.time() - t
    np.save(os.path.join(out_dir, "torch_pixels.npy"), px.numpy().reshape(len(items), -1))
    ours = torch.from_numpy(np.load(ours_pixels).reshape(px.shape))
    diff = (ours - px).abs()

    def run(x, fn):
        out = []
        with torch.inference_mode():
            fn(x[: min(8, len(x))])  # warm-up: first-call allocations are not the model's speed
        t = time.time()
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                out.append(fn(x[i : i + batch_size]).float())
        return torch.cat(out).numpy(), time.time() - t

    emb_torch_px, model_s = run(px, model.encode_image)
    emb_ours_px, model_s2 = run(ours, model.encode_image)
    np.save(os.path.join(out_dir, "torch_on_torch_pixels.npy"), emb_torch_px)
    np.save(os.path.join(out_dir, "torch_on_our_pixels.npy"), emb_ours_px)
    t = time.time()
    ids = tokenizer([c for _, _, c in items])
    tok_s = time.time() - t
    np.save(os.path.join(out_dir, "torch_ids.npy"), ids.numpy().astype(np.float32))  # ids < 2^24: exact
    text_emb, text_s = run(ids, model.encode_text)
    np.save(os.path.join(out_dir, "torch_text.npy"), text_emb)
    print("RESULT " + json.dumps({
        "samples": len(items), "keys": [k for k, _, _ in items], "prepro_s": prepro_s, "model_s": [model_s, model_s2],
        "tokenize_s": tok_s, "text_model_s": text_s,
        "pixel_max_abs_diff": float(diff.max()), "pixel_mean_abs_diff": float(diff.mean()),
        "pixel_share_differing": float((diff > 1e-6).float().mean()),
        "torch": torch.__version__, "open_clip": open_clip.__version__, "pillow": Image.__version__,
        "threads": torch.get_num_threads(),
    }), file=sys.stderr)


def option(args, name, default):
    if name in args:
        i = args.index(name)
        v = args[i + 1]
        del args[i : i + 2]
        return int(v)
    return default


def main(argv):
    args = argv[1:]
    batch_size = option(args, "--batch-size", 256)
    workers = option(args, "--workers", 2)
    threads = option(args, "--threads", os.cpu_count() or 1)
    if not args:
        sys.exit(__doc__)
    cmd, rest = args[0], args[1:]
    if cmd == "export" and len(rest) == 1:
        export(rest[0])
    elif cmd == "quantize" and len(rest) == 1:
        quantize(rest[0])
    elif cmd == "embed" and len(rest) >= 4 and rest[1] in ("image", "text"):
        embed(rest[0], rest[1], rest[2], rest[3:], batch_size, workers, threads)
    elif cmd == "decompose" and len(rest) >= 5:
        decompose(rest[0], rest[1], rest[2], int(rest[3]), rest[4:], batch_size, threads)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
