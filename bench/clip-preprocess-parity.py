"""Reference CLIP preprocessing with Pillow + numpy, step for step as Hugging Face's
CLIPImageProcessor does it (convert RGB, resize shortest edge with PIL, centre crop with
(H - crop) // 2 offsets and zero padding, rescale in float64 -> float32, normalise in float32).
Written from the processor's documented behaviour for bench/clip-preprocess-parity.ts.

  python bench/clip-preprocess-parity.py OUT_DIR CONFIGS_JSON IMAGE...
writes OUT_DIR/<image basename>__<config name>.f32 (float32 CHW, little-endian).
CONFIGS_JSON: {"name": {"shortest_edge": 224, "crop": 224, "resample": 3, "mean": [...], "std": [...], "rescale_factor": 0.0039...}}
"""
import json
import os
import sys

import numpy as np
from PIL import Image


def preprocess(path, cfg):
    img = Image.open(path)
    img = img.convert("RGB")
    w, h = img.size
    edge = cfg["shortest_edge"]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(edge * long / short)
    nw, nh = (edge, new_long) if w <= h else (new_long, edge)
    img = img.resize((nw, nh), resample=cfg["resample"], reducing_gap=None)
    a = np.asarray(img)  # H x W x 3 uint8
    c = cfg["crop"]
    top, left = (nh - c) // 2, (nw - c) // 2
    if top < 0 or left < 0:
        pad = np.zeros((max(nh, c), max(nw, c), 3), dtype=np.uint8)
        pt, pl = max(0, (c - nh) // 2), max(0, (c - nw) // 2)
        pad[pt : pt + nh, pl : pl + nw] = a
        a, top, left = pad, max(top, 0) if top >= 0 else 0, max(left, 0) if left >= 0 else 0
    a = a[top : top + c, left : left + c]
    x = (a.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32)
    mean = np.array(cfg["mean"], dtype=np.float32)
    std = np.array(cfg["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype("<f4")


def main():
    out, configs, images = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    for path in images:
        base = os.path.splitext(os.path.basename(path))[0]
        for name, cfg in configs.items():
            preprocess(path, cfg).tofile(os.path.join(out, f"{base}__{name}.f32"))


if __name__ == "__main__":
    main()
