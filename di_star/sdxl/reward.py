"""Explicit rewards for latent generators: an evalsuite metric's differentiable path
(`score_tensor(images[N,3,H,W] in [0,1], prompts) -> Tensor[N]`) behind the VAE decoder."""
from __future__ import annotations

import torch
from torch import nn

from evalsuite.errors import DistarError

# Metrics with a differentiable path, and the dtype argument each constructor takes.
_DIFFERENTIABLE = {"pickscore": "str", "pickscore_logit": "str", "aesthetic": "str", "hpsv2": "str",
                   "hpsv21": "str", "clip": "str", "imagereward": "torch"}
RANDOM_REWARDS = ("tiny:pickscore", "random:pickscore")


_TEXT_IDS = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                 pad_token_id=49407)
# PickScore_v1 is CLIP ViT-H/14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's architecture).
_VIT_H14 = dict(projection_dim=1024,
                text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, hidden_act="gelu", **_TEXT_IDS),
                vision_config=dict(image_size=224, patch_size=14, hidden_size=1280, intermediate_size=5120,
                                   num_hidden_layers=32, num_attention_heads=16, hidden_act="gelu"))
_TINY = dict(projection_dim=32,
             text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, **_TEXT_IDS),
             vision_config=dict(image_size=224, patch_size=32, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2))


def random_pickscore(device: torch.device, size: str = "tiny", dtype: torch.dtype = torch.float32,
                     seed: int = 0):
    """PickScore's code path (transformers CLIPModel, the PIL-configured CLIP processor, a real
    CLIP tokenizer) with seeded random weights, built offline and identical on every build:
    size 'tiny' (a few layers; tests and smoke runs) or 'full' (ViT-H/14, for speed and memory
    measurements). Its scores mean nothing."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from evalsuite.metrics.pickscore import PickScore
    from evalsuite.models.tokenizer import build_clip_tokenizer

    cpu_rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**(_TINY if size == "tiny" else _VIT_H14))).eval()
    torch.random.set_rng_state(cpu_rng)  # building the reward must not move the caller's stream
    text = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return PickScore.from_modules(model, CLIPImageProcessorPil(), build_clip_tokenizer(),
                                  device=str(device), dtype=text if device.type == "cuda" else "fp32")


def build_reward(name: str, device: torch.device, dtype: torch.dtype = torch.float32):
    """The reward metric `name` on `device`; half precision only on a GPU."""
    if name in RANDOM_REWARDS:  # random weights, offline: 'tiny:' for tests, 'random:' full size
        return random_pickscore(device, "tiny" if name.startswith("tiny:") else "full", dtype)
    if name not in _DIFFERENTIABLE:
        from evalsuite.metrics import METRICS
        known = [m for m in METRICS.names() if m in _DIFFERENTIABLE]
        raise DistarError(f"Reward '{name}' has no differentiable path (score_tensor). Choose one "
                          f"of: {', '.join(known + list(RANDOM_REWARDS))}.")
    from evalsuite.metrics import load_metric
    if device.type != "cuda":
        dtype = torch.float32
    if _DIFFERENTIABLE[name] == "torch":
        return load_metric(name, device=device, dtype=dtype)
    text = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return load_metric(name, device=str(device), dtype=text)


def reward_modules(metric) -> list[nn.Module]:
    """The networks inside a metric object (to freeze, move and check they never change)."""
    return [v for v in vars(metric).values() if isinstance(v, nn.Module)]
