"""ImageReward's BLIP reward model, ported from image-reward 1.5 for batched inference and gradients.

Only the path ImageReward scores with is ported: the BLIP ViT image encoder, the BERT text encoder
in its 'multimodal' mode (self-attention over the prompt, then cross-attention to the image
tokens), the [CLS] feature, and the MLP head. Parameter names are those of the reference
`ImageReward` module (`blip.visual_encoder.*`, `blip.text_encoder.*`, `mlp.layers.*`), so
`ImageReward.pt` loads as it is. Attention runs through `F.scaled_dot_product_attention`.

Differences from the reference that do not change a score (checked by the parity test):
- Padding: the reference pads every prompt to 35 tokens and masks pads with -10000 before the
  softmax; here pads are masked with a boolean mask and batches are trimmed to their longest
  prompt. Pads sit at the end and position embeddings are absolute, so [CLS] never sees them.
- Unused parts are not built: `vision_proj`, `text_proj` (contrastive heads) and the decoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

# Normalisation of the raw MLP output, from image-reward 1.5 (ImageReward.py).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
# BLIP's ViTs (base 768/12 heads, large 1024/16 heads) all use 64-dimensional heads.
VIT_HEAD_DIM = 64


@dataclass(frozen=True)
class BlipRewardConfig:
    # Image encoder (BLIP ViT, timm layout). Defaults: ViT-L/16 at 224, as ImageReward v1.0.
    image_size: int = 224          # pixels, square input
    patch_size: int = 16           # pixels
    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    vision_mlp_ratio: float = 4.0
    # Text encoder (BERT-base with cross-attention, from med_config.json).
    vocab_size: int = 30524        # bert-base-uncased 30522 + '[DEC]' + '[ENC]'
    text_width: int = 768          # also the MLP head's input
    text_depth: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"

    def __post_init__(self):
        if self.hidden_act != "gelu":
            raise ValueError(f"Unknown hidden_act {self.hidden_act!r}; BLIP's med_config uses 'gelu'")
        if self.position_embedding_type != "absolute":
            raise ValueError(f"Unknown position_embedding_type {self.position_embedding_type!r}; "
                             "only 'absolute' (BLIP's) is ported")

    def with_med_config(self, med: dict) -> "BlipRewardConfig":
        """Take the text-encoder fields from a BLIP `med_config.json` (a BertConfig dict)."""
        return replace(
            self,
            vocab_size=med["vocab_size"],
            text_width=med["hidden_size"],
            text_depth=med["num_hidden_layers"],
            text_heads=med["num_attention_heads"],
            text_intermediate=med["intermediate_size"],
            max_position_embeddings=med["max_position_embeddings"],
            layer_norm_eps=med.get("layer_norm_eps", 1e-12),
            hidden_act=med.get("hidden_act", "gelu"),
            position_embedding_type=med.get("position_embedding_type", "absolute"),
        )

    @classmethod
    def from_checkpoint(cls, state_dict: dict, med: dict) -> "BlipRewardConfig":
        """Text fields from `med`; image-encoder sizes read off the checkpoint's tensors (head
        count as width / 64, true of every BLIP ViT)."""
        sd = state_dict
        width = sd["blip.visual_encoder.cls_token"].shape[-1]
        patch = sd["blip.visual_encoder.patch_embed.proj.weight"].shape[-1]
        grid = math.isqrt(sd["blip.visual_encoder.pos_embed"].shape[1] - 1)
        depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("blip.visual_encoder.blocks."))
        vision = cls(image_size=grid * patch, patch_size=patch, vision_width=width,
                     vision_depth=depth, vision_heads=width // VIT_HEAD_DIM)
        return vision.with_med_config(med)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, L, H*D] -> [N, H, L, D]"""
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[N, H, L, D] -> [N, L, H*D]"""
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


# ---- Image encoder: BLIP's VisionTransformer (pre-norm blocks, final LayerNorm, all tokens out).

class _VitAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class _VitMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = _VitAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = _VitMlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, grid*grid, width]


class VisionTransformer(nn.Module):
    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.patch_embed = _PatchEmbed(cfg.patch_size, cfg.vision_width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.vision_width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, cfg.vision_width))
        self.blocks = nn.ModuleList(
            _VitBlock(cfg.vision_width, cfg.vision_heads, cfg.vision_mlp_ratio)
            for _ in range(cfg.vision_depth))
        self.norm = nn.LayerNorm(cfg.vision_width, eps=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] normalised pixels -> [N, 1 + (S/patch)^2, width] image tokens."""
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ---- Text encoder: BLIP's BERT ("med") in multimodal mode. Post-norm layers.

class _BertSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, kv_width: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)

    def forward(self, x, context, mask):
        q = _split_heads(self.query(x), self.heads)
        k = _split_heads(self.key(context), self.heads)
        v = _split_heads(self.value(context), self.heads)
        return _merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


class _BertResidualNorm(nn.Module):
    """BertSelfOutput / BertOutput: dense, add the block input, LayerNorm."""

    def __init__(self, in_width: int, width: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _BertAttention(nn.Module):
    def __init__(self, width: int, heads: int, kv_width: int, eps: float):
        super().__init__()
        self.self = _BertSelfAttention(width, heads, kv_width)
        self.output = _BertResidualNorm(width, width, eps)

    def forward(self, x, context, mask=None):
        return self.output(self.self(x, context, mask), x)


class _BertIntermediate(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        w, eps = cfg.text_width, cfg.layer_norm_eps
        self.attention = _BertAttention(w, cfg.text_heads, w, eps)
        self.crossattention = _BertAttention(w, cfg.text_heads, cfg.vision_width, eps)
        self.intermediate = _BertIntermediate(w, cfg.text_intermediate)
        self.output = _BertResidualNorm(cfg.text_intermediate, w, eps)

    def forward(self, x, text_mask, image_tokens):
        x = self.attention(x, x, text_mask)
        x = self.crossattention(x, image_tokens)  # every image token is attended (no mask)
        return self.output(self.intermediate(x), x)


class _BertEmbeddings(nn.Module):
    """Word + absolute position embeddings (BLIP's med has no token-type embeddings)."""

    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.text_width)
        self.LayerNorm = nn.LayerNorm(cfg.text_width, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class _BertEncoder(nn.Module):
    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(cfg) for _ in range(cfg.text_depth))


class TextEncoder(nn.Module):
    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        self.embeddings = _BertEmbeddings(cfg)
        self.encoder = _BertEncoder(cfg)

    def forward(self, input_ids, attention_mask, image_tokens) -> torch.Tensor:
        """Token ids [N, L] with 1/0 mask (right padding) + image tokens -> [CLS] feature [N, W]."""
        length = int(attention_mask.sum(dim=1).max())  # drop all-pad columns: [CLS] never sees them
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        mask = attention_mask.bool()[:, None, None, :]  # [N, 1, 1, L] keys to attend
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask, image_tokens)
        return x[:, 0]


class _Blip(nn.Module):
    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        self.visual_encoder = VisionTransformer(cfg)
        self.text_encoder = TextEncoder(cfg)


def _reward_head(width: int) -> nn.Sequential:
    """The reference MLP: five Linear layers, no activations (its ReLUs are commented out);
    Identity where its Dropouts sit, so the checkpoint's `mlp.layers.{0,2,4,6,7}` names hold."""
    return nn.Sequential(nn.Linear(width, 1024), nn.Identity(), nn.Linear(1024, 128), nn.Identity(),
                         nn.Linear(128, 64), nn.Identity(), nn.Linear(64, 16), nn.Linear(16, 1))


class _Head(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.layers = _reward_head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ImageRewardModel(nn.Module):
    """Normalised ImageReward for (normalised 224 px images, tokenised prompts)."""

    # Checkpoint entries this port has no use for.
    UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.pooler.")
    UNUSED_SUFFIXES = ("embeddings.position_ids",)

    def __init__(self, cfg: BlipRewardConfig):
        super().__init__()
        self.config = cfg
        self.blip = _Blip(cfg)
        self.mlp = _Head(cfg.text_width)

    def forward(self, pixels, input_ids, attention_mask) -> torch.Tensor:
        """pixels [N, 3, S, S] (CLIP-normalised), input_ids / attention_mask [N, L] -> [N] fp32."""
        image_tokens = self.blip.visual_encoder(pixels)
        feature = self.blip.text_encoder(input_ids, attention_mask, image_tokens)
        # The reference runs its head on fp32 features; a caller may keep the head fp32 too.
        raw = self.mlp(feature.float().to(self.mlp.layers[0].weight.dtype)).float().squeeze(-1)
        return (raw - REWARD_MEAN) / REWARD_STD

    @classmethod
    def is_unused_key(cls, key: str) -> bool:
        return key.startswith(cls.UNUSED_PREFIXES) or key.endswith(cls.UNUSED_SUFFIXES)
