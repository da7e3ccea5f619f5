"""Reads a download_images output folder with the Python ecosystem's own readers (webdataset,
pyarrow) and, given an img2dataset output folder made from the same input, lists every field whose
presence or type differs. Run through bench/interop/run.ts (which makes the venv).

    python check.py OURS_DIR [IMG2DATASET_DIR]
"""
import glob
import io
import json
import os
import sys

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image


def read_tars(folder):
    """Every sample through webdataset's own tar reader, as a user's training loop sees it."""
    tars = sorted(glob.glob(os.path.join(folder, "*.tar")))
    samples = {}
    for sample in wds.WebDataset(tars, shardshuffle=False):
        samples[sample["__key__"]] = sample
    return samples


def json_types(samples):
    types = {}
    for s in samples.values():
        meta = json.loads(s["json"])
        for k, v in meta.items():
            types.setdefault(k, set()).add(type(v).__name__)
    return {k: sorted(v) for k, v in types.items()}


def describe(folder):
    samples = read_tars(folder)
    for key, s in list(samples.items())[:50]:
        # Every image member decodes and its size matches its json.
        img = Image.open(io.BytesIO(s["jpg"]))
        meta = json.loads(s["json"])
        assert (img.width, img.height) == (meta["width"], meta["height"]), (key, img.size, meta)
        assert s["txt"].decode("utf-8") == (meta["caption"] or ""), key
    members = sorted({k for s in samples.values() for k in s if not k.startswith("__")})
    parquets = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    schema = pq.read_schema(parquets[0]) if parquets else None
    rows = sum(pq.read_metadata(p).num_rows for p in parquets)
    stats = {}
    for p in sorted(glob.glob(os.path.join(folder, "*_stats.json"))):
        for k, v in json.load(open(p)).items():
            stats.setdefault(k, set()).add(type(v).__name__)
    return {
        "samples": len(samples),
        "members": members,
        "json": json_types(samples),
        "parquet_schema": [(f.name, str(f.type)) for f in schema] if schema else [],
        "parquet_rows": rows,
        "stats": {k: sorted(v) for k, v in stats.items()},
    }


def compare(label, ours, theirs):
    diffs = []
    if isinstance(ours, dict):
        for k in sorted(set(ours) | set(theirs)):
            if k not in ours:
                diffs.append(f"{label}.{k}: missing in ours (img2dataset: {theirs[k]})")
            elif k not in theirs:
                diffs.append(f"{label}.{k}: only in ours ({ours[k]})")
            elif ours[k] != theirs[k] and set(ours[k]) - {"NoneType"} != set(theirs[k]) - {"NoneType"}:
                diffs.append(f"{label}.{k}: ours {ours[k]} vs img2dataset {theirs[k]}")
    elif ours != theirs:
        diffs.append(f"{label}: ours {ours} vs img2dataset {theirs}")
    return diffs


def main():
    ours = describe(sys.argv[1])
    print(f"ours: {ours['samples']} samples read by webdataset, members {ours['members']}, "
          f"{ours['parquet_rows']} parquet rows")
    print("ours parquet schema:", ", ".join(f"{n}:{t}" for n, t in ours["parquet_schema"]))
    if len(sys.argv) < 3:
        return 0
    theirs = describe(sys.argv[2])
    print(f"img2dataset: {theirs['samples']} samples, members {theirs['members']}, {theirs['parquet_rows']} parquet rows")
    diffs = []
    diffs += compare("tar members", ours["members"], theirs["members"])
    diffs += compare("json", ours["json"], theirs["json"])
    diffs += compare("parquet", dict((n, [t]) for n, t in ours["parquet_schema"]),
                     dict((n, [t]) for n, t in theirs["parquet_schema"]))
    if [n for n, _ in ours["parquet_schema"]] != [n for n, _ in theirs["parquet_schema"]]:
        diffs.append("parquet column order: ours %s vs img2dataset %s" % (
            [n for n, _ in ours["parquet_schema"]], [n for n, _ in theirs["parquet_schema"]]))
    diffs += compare("stats", ours["stats"], theirs["stats"])
    print("fields whose presence or type differs from img2dataset's:" if diffs else
          "no field differs in presence or type from img2dataset's output")
    for d in diffs:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
