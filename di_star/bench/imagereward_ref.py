"""Run the reference `image-reward` 1.5 package under transformers 5, without touching its files.

Used by the parity test and the benchmark only: evalsuite's own ImageReward metric is a native
port (`evalsuite/metrics/blip.py`) and never imports the reference package.

image-reward 1.5 was written against transformers 4.x. Under transformers 5 its BLIP text model
(`ImageReward/models/BLIP/med.py`) fails at import and at construction, and its tokenizer setup
fails at construction. Each fix below restores the 4.x behaviour of one helper, as the package
used it:
- `apply_chunking_to_forward`, `prune_linear_layer` moved from `transformers.modeling_utils` to
  `transformers.pytorch_utils`; `find_pruneable_heads_and_indices` was removed (only head pruning
  uses it, which ImageReward never calls; restored verbatim anyway so the import is honest).
- `PreTrainedModel.init_weights()` in 5.x needs state that `post_init()` sets up; 4.x models
  called `init_weights()` alone. The package's BertModel gets an `init_weights` that runs
  `post_init()` (which itself ends by calling the real `init_weights`).
- `PreTrainedModel.invert_attention_mask` and `get_head_mask` were removed; attached to the
  package's BertModel only, as in 4.x.
- Tokenizers: `additional_special_tokens_ids` is gone; `init_tokenizer` is replaced by the same
  steps (bert-base-uncased, bos '[DEC]', extra special '[ENC]') written for 5.x.
Importing the package also imports its ReFL trainer (diffusers, datasets, accelerate), so the
first import takes several seconds.
"""
from __future__ import annotations

import importlib
import sys
import types

import torch

import evalsuite  # noqa: F401  (torchvision operator fix; must run before torchvision loads)

_PATCHED = False


def _find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned_heads):
    """transformers 4.x `find_pruneable_heads_and_indices`, unchanged."""
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        head = head - sum(1 if h < head else 0 for h in already_pruned_heads)
        mask[head] = 0
    mask = mask.view(-1).contiguous().eq(1)
    index = torch.arange(len(mask))[mask].long()
    return heads, index


def _invert_attention_mask(self, encoder_attention_mask: torch.Tensor) -> torch.Tensor:
    """transformers 4.x `ModuleUtilsMixin.invert_attention_mask`: 1 -> 0, 0 -> dtype min."""
    if encoder_attention_mask.dim() == 3:
        extended = encoder_attention_mask[:, None, :, :]
    else:
        extended = encoder_attention_mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _get_head_mask(self, head_mask, num_hidden_layers: int, is_attention_chunked: bool = False):
    """transformers 4.x `ModuleUtilsMixin.get_head_mask`: None -> one None per layer."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:  # [heads] -> [layers, batch, heads, seq, seq]
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:  # [layers, heads]
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(dtype=self.dtype)
    return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask


def _init_weights_via_post_init(self):
    """4.x `init_weights()` == 5.x `post_init()`; post_init calls init_weights() again at its
    end, and that inner call must reach the real 5.x init_weights."""
    from transformers import PreTrainedModel

    if self.__dict__.get("_in_post_init", False):
        return PreTrainedModel.init_weights(self)
    self.__dict__["_in_post_init"] = True
    try:
        self.post_init()
    finally:
        del self.__dict__["_in_post_init"]


def init_tokenizer(source: str = "bert-base-uncased"):
    """The package's `init_tokenizer` for transformers 5: same tokens, same ids."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(source)
    # transformers 5 returns a special-tokens-only vocabulary when it finds no vocab file.
    if set(tokenizer.get_vocab()) <= set(tokenizer.all_special_tokens):
        raise OSError(f"no BERT vocabulary found at {source!r}")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def import_reference() -> types.ModuleType:
    """Import and return the reference `ImageReward` package, patched to run on transformers 5."""
    global _PATCHED
    if _PATCHED:
        return sys.modules["ImageReward"]
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    # Restore the names med.py imports from transformers.modeling_utils (only if missing).
    for name, value in (
        ("apply_chunking_to_forward", pytorch_utils.apply_chunking_to_forward),
        ("prune_linear_layer", pytorch_utils.prune_linear_layer),
        ("find_pruneable_heads_and_indices", _find_pruneable_heads_and_indices),
    ):
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, value)

    package = importlib.import_module("ImageReward")
    med = importlib.import_module("ImageReward.models.BLIP.med")
    blip = importlib.import_module("ImageReward.models.BLIP.blip")
    blip_pretrain = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")

    # Patch the package's own classes, never transformers' shared base classes.
    if not hasattr(med.BertModel, "invert_attention_mask"):
        med.BertModel.invert_attention_mask = _invert_attention_mask
    if not hasattr(med.BertModel, "get_head_mask"):
        med.BertModel.get_head_mask = _get_head_mask
    med.BertPreTrainedModel.init_weights = _init_weights_via_post_init
    blip.init_tokenizer = blip_pretrain.init_tokenizer = init_tokenizer
    _PATCHED = True
    return package


# ---- Random-weight builds of the reference, for the parity test and the benchmark -------------

def build_reference(med_config: str, tokenizer_source: str, vit: dict | None = None,
                    device: str = "cpu"):
    """The package's own `ImageReward` model class with its init's random weights.
    `tokenizer_source`: a folder with a BERT vocab.txt (the package would download
    bert-base-uncased). `vit`: kwargs for the package's VisionTransformer, replacing the ViT-L its
    `create_vit` hard-codes (None keeps ViT-L); the text encoder's cross-attention width follows."""
    import_reference()
    from ImageReward.ImageReward import ImageReward as ReferenceImageReward
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP import vit as vit_module

    saved = blip_pretrain.create_vit, blip_pretrain.init_tokenizer
    try:
        blip_pretrain.init_tokenizer = lambda: init_tokenizer(tokenizer_source)
        if vit is not None:
            blip_pretrain.create_vit = lambda *args, **kwargs: (
                vit_module.VisionTransformer(**vit), vit["embed_dim"])
        model = ReferenceImageReward(med_config=med_config, device=device)
    finally:
        blip_pretrain.create_vit, blip_pretrain.init_tokenizer = saved
    return model.to(device).eval()


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every parameter at O(1) effect. The package's init gives near-constant rewards
    (zero biases, a head with std 1/769), under which a broken port could still match."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2 and name.endswith(".weight"):  # Linear, Conv, Embedding
            value = torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5
        elif "norm" in name.lower() and name.endswith(".weight"):
            value = 1 + 0.2 * torch.randn(p.shape, generator=g)
        else:  # biases, cls_token, pos_embed
            value = 0.2 * torch.randn(p.shape, generator=g)
        p.copy_(value)
    return model
