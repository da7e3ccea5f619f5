// Captions to CLIP's 77 input ids. The byte-level BPE is @huggingface/tokenizers reading the model
// folder's tokenizer.json (or one we assemble from vocab.json + merges.txt with CLIP's pipeline);
// what we add is CLIP's framing, which tokenizer.json's post-processor cannot express:
// <|startoftext|>, at most 75 tokens, <|endoftext|>, zero padding to 77 (clip.tokenize with
// truncate=True). No ftfy or HTML unescaping: tokenizer.json does neither, and neither do we.
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { CONTEXT_LENGTH, ModelFolderError, readJsonFile, type ModelFiles } from './clip-model.ts';

export const SOT_TOKEN = '<|startoftext|>';
export const EOT_TOKEN = '<|endoftext|>';

/** CLIP's text pipeline as Hugging Face's tokenizer.json spells it, around a given vocabulary. */
export function clipTokenizerConfig(vocab: Record<string, number>, merges: string[]): Record<string, unknown> {
  const special = (token: string) => ({ id: vocab[token], content: token, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true });
  return {
    version: '1.0',
    added_tokens: [special(SOT_TOKEN), special(EOT_TOKEN)],
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" },
          behavior: 'Removed',
          invert: true,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: EOT_TOKEN,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** merges.txt lines: an optional `#version` header, then `a b` per line. */
export function parseMerges(text: string): string[] {
  return text.split('\n').filter((l, i) => l.trim() !== '' && !(i === 0 && l.startsWith('#')));
}

export interface TokenBatch {
  ids: BigInt64Array;
  /** 1 over SOT..EOT, 0 over the padding: fed only to models that take attention_mask. */
  mask: BigInt64Array;
}

export class ClipTokenizer {
  readonly sot: number;
  readonly eot: number;
  private readonly tokenizer: Tokenizer;

  constructor(config: Record<string, unknown>, source: string) {
    try {
      this.tokenizer = new Tokenizer(config, {});
    } catch (err) {
      throw new ModelFolderError(`${source} is not a tokenizer @huggingface/tokenizers can read: ${(err as Error).message}`);
    }
    const sot = this.tokenizer.token_to_id(SOT_TOKEN);
    const eot = this.tokenizer.token_to_id(EOT_TOKEN);
    if (sot === undefined || eot === undefined) throw new ModelFolderError(`${source} has no ${SOT_TOKEN} / ${EOT_TOKEN} tokens; is it a CLIP tokenizer?`);
    this.sot = sot;
    this.eot = eot;
  }

  /** From the model folder: tokenizer.json, else vocab.json + merges.txt with CLIP's pipeline. */
  static fromModelFiles(files: Pick<ModelFiles, 'tokenizerJson' | 'vocabJson' | 'mergesTxt' | 'dir'>): ClipTokenizer {
    if (files.tokenizerJson) return new ClipTokenizer(readJsonFile(files.tokenizerJson), files.tokenizerJson);
    if (files.vocabJson && files.mergesTxt) {
      const vocab = readJsonFile(files.vocabJson) as Record<string, number>;
      const merges = parseMerges(readFileSync(files.mergesTxt, 'utf8'));
      return new ClipTokenizer(clipTokenizerConfig(vocab, merges), files.vocabJson);
    }
    throw new ModelFolderError(`${files.dir} has neither tokenizer.json nor vocab.json + merges.txt`);
  }

  /** The BPE ids of a caption, without SOT/EOT and untruncated. */
  tokenIds(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** SOT + the first 75 tokens + EOT, zero padded to 77: one row of input_ids. */
  encodeInto(text: string, ids: BigInt64Array, mask: BigInt64Array, row: number): void {
    const body = this.tokenIds(text);
    const n = Math.min(body.length, CONTEXT_LENGTH - 2);
    const base = row * CONTEXT_LENGTH;
    ids.fill(0n, base, base + CONTEXT_LENGTH);
    mask.fill(0n, base, base + CONTEXT_LENGTH);
    ids[base] = BigInt(this.sot);
    for (let i = 0; i < n; i++) ids[base + 1 + i] = BigInt(body[i]!);
    ids[base + 1 + n] = BigInt(this.eot);
    mask.fill(1n, base, base + n + 2);
  }

  encodeBatch(texts: readonly string[]): TokenBatch {
    const ids = new BigInt64Array(texts.length * CONTEXT_LENGTH);
    const mask = new BigInt64Array(texts.length * CONTEXT_LENGTH);
    texts.forEach((t, i) => this.encodeInto(t, ids, mask, i));
    return { ids, mask };
  }
}
