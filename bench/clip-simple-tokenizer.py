"""CLIP's own text tokenisation (OpenAI's simple_tokenizer algorithm: byte-level BPE over the
bpe_simple_vocab_16e6 merges, `</w>` word ends, SOT/EOT), written from its description for
our tokenizer test. For every caption of a JSON-lines file it prints one JSON line:
  {"openai": [...], "plain": [...]}
`openai` is what clip.tokenize gives (ftfy.fix_text, HTML unescaped twice, whitespace collapsed,
lower case); `plain` skips ftfy and HTML unescaping but keeps NFC, which is what a Hugging Face
tokenizer.json pipeline does. Ids are the BPE tokens only (no SOT/EOT, no truncation).

  .bench/venv/bin/pip install regex ftfy
  .bench/venv/bin/python bench/clip-simple-tokenizer.py ../shared/data/clip-bpe/bpe_simple_vocab_16e6.txt.gz \
      ../shared/data/img2dataset-tests/test_files/captions_10000.jsonl | gzip -9 > test/fixtures/clip-bpe-ids-laion-10000.jsonl.gz
"""
import gzip
import html
import json
import sys
import unicodedata

import ftfy
import regex

SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def byte_symbols():
    """Each byte's printable stand-in (printable Latin-1 bytes are themselves, the rest 256+k), in
    vocabulary order: the printable bytes first, then the others."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in keep:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ClipBpe:
    def __init__(self, merges_gz):
        lines = gzip.open(merges_gz).read().decode("utf-8").split("\n")
        merges = [tuple(l.split()) for l in lines[1 : 49152 - 256 - 2 + 1]]
        self.byte_table = byte_symbols()
        symbols = list(self.byte_table.values())
        symbols += [s + "</w>" for s in symbols]
        symbols += ["".join(m) for m in merges]
        symbols += ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {s: i for i, s in enumerate(symbols)}
        self.rank = {m: i for i, m in enumerate(merges)}
        self.cache = {}

    def word(self, token):
        if token in self.cache:
            return self.cache[token]
        parts = list(token[:-1]) + [token[-1] + "</w>"]
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.rank.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, parts[i], parts[i + 1])
            if best is None:
                break
            _, a, b = best
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.cache[token] = parts
        return parts

    def encode(self, text):
        out = []
        for piece in SPLIT.findall(text):
            mapped = "".join(self.byte_table[b] for b in piece.encode("utf-8"))
            out.extend(self.ids[p] for p in self.word(mapped))
        return out


def collapse(text):
    return regex.sub(r"\s+", " ", text).strip().lower()


def main():
    bpe = ClipBpe(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        for line in f:
            caption = json.loads(line)
            caption = "" if caption is None else str(caption)
            openai = collapse(html.unescape(html.unescape(ftfy.fix_text(caption))).strip())
            plain = collapse(unicodedata.normalize("NFC", caption))
            sys.stdout.write(json.dumps({"openai": bpe.encode(openai), "plain": bpe.encode(plain)}) + "\n")


if __name__ == "__main__":
    main()
