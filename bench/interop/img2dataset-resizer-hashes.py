"""sha256 of img2dataset 1.47's resizer output for its own test images, per resize mode, with its
default options (image_size 256, area down, lanczos up, jpg quality 95). The table in
test/resizer-exact.test.ts came from this script; rerun it in the bench venv to check it:

    .bench/img2dataset-venv/bin/python bench/interop/img2dataset-resizer-hashes.py ../shared/data/img2dataset-tests/resize_test_image
"""
import hashlib
import io
import json
import os
import sys

from img2dataset.resizer import Resizer

folder = sys.argv[1]
hashes = {}
for mode in ["border", "keep_ratio", "center_crop", "keep_ratio_largest", "no"]:
    resizer = Resizer(
        image_size=256, resize_mode=mode, resize_only_if_bigger=False, upscale_interpolation="lanczos",
        downscale_interpolation="area", encode_quality=95, encode_format="jpg", skip_reencode=False,
        disable_all_reencoding=False, min_image_size=0, max_image_area=float("inf"), max_aspect_ratio=float("inf"),
    )
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            image = resizer(io.BytesIO(f.read()))[0]
        hashes[f"{name} {mode}"] = hashlib.sha256(image).hexdigest()
print(json.dumps(hashes, indent=2))
