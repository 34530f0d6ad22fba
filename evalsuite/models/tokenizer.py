"""A real CLIP BPE tokenizer, offline.

No package ships a Hugging Face CLIP vocab, but open_clip ships the original OpenAI BPE merges
(`bpe_simple_vocab_16e6.txt.gz`). The HF `vocab.json` / `merges.txt` are a re-encoding of that
same file, built here exactly as open_clip's SimpleTokenizer builds its vocabulary, so token ids
match open_clip's tokenizer (tests/test_tokenizer.py checks it).
"""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from distar.core import atomic
from distar.core.paths import cache_dir


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _open_clip_bpe_path() -> Path:
    import open_clip.tokenizer as oct
    return Path(oct.default_bpe())


def write_clip_vocab(out_dir: Path) -> Path:
    """Write vocab.json + merges.txt derived from open_clip's BPE file into out_dir."""
    merges_raw = gzip.open(_open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = merges_raw[1:49152 - 256 - 2 + 1]  # the slice open_clip's SimpleTokenizer uses
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("vocab.json", json.dumps({t: i for i, t in enumerate(vocab)})),
                       ("merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")):
        atomic.write_text(out_dir / name, text)  # a concurrent reader never sees half a file
    return out_dir


@lru_cache(maxsize=4)
def build_clip_tokenizer(pad_token: str = "<|endoftext|>", directory: str | None = None):
    """A transformers CLIPTokenizer (77 tokens) built offline from open_clip's BPE vocab.
    SD1.5 / SDXL tokenizer 1 pad with '<|endoftext|>', SDXL tokenizer 2 pads with '!'."""
    from transformers import CLIPTokenizer

    d = Path(directory) if directory else cache_dir() / "clip_bpe"
    if not (d / "vocab.json").exists() or not (d / "merges.txt").exists():
        write_clip_vocab(d)
    return CLIPTokenizer.from_pretrained(str(d), model_max_length=77, pad_token=pad_token,
                                         local_files_only=True)


@lru_cache(maxsize=1)
def build_t5_tokenizer():
    """A T5 tokenizer (transformers' T5 class, a SentencePiece-style unigram model with T5's
    special ids: <pad> 0, </s> 1, <unk> 2, and `</s>` appended) over a character vocabulary.

    For the offline tiny / random-weight SD3 and FLUX pipelines only: the real T5 vocabulary
    (spiece.model, 32k pieces) ships with no package, and random text encoders do not care which
    ids a prompt gets, only that the pipeline's tokenizer code path runs as with the real one.
    Every id is < 200, inside T5-XXL's 32128-row embedding."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = [c for c in string.printable if not c.isspace()]
    # Word-initial pieces score above word-internal ones, as a trained unigram model's would.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=512)
