"""A tiny Hugging Face CLIPModel folder for `clip-retrieval back` to load offline (bench only).

clip-retrieval back loads a CLIP model at start (all_clip.load_clip) even when only
embedding_input queries will come, and its usual models come from the hub, which the bench
machine cannot reach. all_clip's "hf_clip:<folder>" loader reads a local folder with
CLIPModel.from_pretrained and CLIPProcessor.from_pretrained, and tokenizes with the clip package's
own BPE (shipped in the wheel). So this writes a random, 1-layer CLIP with a --dim-d projection
(16, the bench's text index), a 32-pixel image tower, CLIP's full 49,408-token vocabulary (the
ids clip.tokenize produces) and a minimal tokenizer file pair that CLIPProcessor needs to load
(never used: all_clip tokenizes with clip.tokenize). Its text embeddings mean nothing; they only
make text queries run through the same steps a real model would, at a tiny model's cost.

    python bench/clip-retrieval-stub-model.py OUT_DIR [--dim 16]
"""

import argparse
import json
import os

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--dim", type=int, default=16, help="projection (embedding) dimension")
    a = p.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "eos_token_id": 49407,
            "bos_token_id": 49406,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=a.dim,
    )
    CLIPModel(config).eval().save_pretrained(a.out_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(a.out_dir)
    # CLIPTokenizer's two files, smallest valid form; the special tokens are the vocabulary.
    with open(os.path.join(a.out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({"<|startoftext|>": 0, "<|endoftext|>": 1}, f)
    with open(os.path.join(a.out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(a.out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77}, f)
    print(f"wrote a {a.dim}-d stub CLIPModel to {a.out_dir}")


if __name__ == "__main__":
    main()
