"""Explicit rewards for latent generators: an evalsuite metric's differentiable path
(`score_tensor(images[N,3,H,W] in [0,1], prompts) -> Tensor[N]`) behind the VAE decoder."""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from distar.core.dtypes import dtype_name
from distar.core.errors import DistarError

# Metrics with a differentiable path (every metric takes dtype as a name: 'fp32', 'bf16', 'fp16').
_DIFFERENTIABLE = ("pickscore", "pickscore_logit", "aesthetic", "hpsv2", "hpsv21", "clip",
                   "imagereward")
RANDOM_REWARDS = ("tiny:pickscore", "random:pickscore")


_TEXT_IDS = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                 pad_token_id=49407)
# PickScore_v1 is CLIP ViT-H/14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's architecture).
VIT_H14 = dict(projection_dim=1024,
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
    model = CLIPModel(CLIPConfig(**(_TINY if size == "tiny" else VIT_H14))).eval()
    torch.random.set_rng_state(cpu_rng)  # building the reward must not move the caller's stream
    text = dtype_name(dtype, short=True)
    return PickScore(model, CLIPImageProcessorPil(), build_clip_tokenizer(), device=str(device),
                     dtype=text if device.type == "cuda" else "fp32")


def _metric_factory(metric: str):
    """What a metric name is registered to (a class's from_pretrained), imported, not built."""
    from evalsuite.metrics import METRICS
    return METRICS.load(metric)


def _metric_class(factory):
    """The class behind a registered `Class.from_pretrained` (or the factory itself)."""
    return getattr(factory, "__self__", factory)


def split_reward(name: str) -> tuple[str, str | None]:
    """'NAME' or 'NAME@DIR' (the metric NAME with its weights, and processor files when it takes
    them, read from the local folder DIR: e.g. 'pickscore@di_star/mini/data/proxy_reward', the
    mini world's PickScore-architecture proxy reward)."""
    metric, sep, folder = name.partition("@")
    return metric, (folder or None) if sep else None


def check_reward(name: str) -> None:
    """Fail before anything is loaded when `name` cannot be a reward (unknown metric, missing
    folder); whether the metric has a differentiable path is checked once it is built."""
    if name in RANDOM_REWARDS:
        return
    from evalsuite.metrics import METRICS
    metric, folder = split_reward(name)
    if metric not in METRICS:
        raise DistarError(f"Unknown reward '{metric}' (sd.reward = '{name}'). Choose a metric with a "
                          f"differentiable path ({', '.join(_DIFFERENTIABLE)}, or a registered metric "
                          f"with score_tensor), optionally NAME@DIR for local weights, or one of "
                          f"{', '.join(RANDOM_REWARDS)}.")
    factory = _metric_class(_metric_factory(metric))
    if isinstance(factory, type) and not callable(getattr(factory, "score_tensor", None)):
        raise DistarError(f"Reward '{metric}' has no differentiable path (score_tensor). Choose one of: "
                          f"{', '.join(list(_DIFFERENTIABLE) + list(RANDOM_REWARDS))}.")
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise DistarError(f"sd.reward = '{name}': the weights folder {folder} does not exist. Fix: point "
                          f"NAME@DIR at a folder holding the metric's weights.")


def build_reward(name: str, device: torch.device, dtype: torch.dtype = torch.float32):
    """The reward metric `name` ('NAME' or 'NAME@DIR', see split_reward) on `device`; half
    precision only on a GPU. Any registered metric with a `score_tensor` is accepted."""
    if name in RANDOM_REWARDS:  # random weights, offline: 'tiny:' for tests, 'random:' full size
        return random_pickscore(device, "tiny" if name.startswith("tiny:") else "full", dtype)
    check_reward(name)
    from evalsuite.metrics import load_metric
    metric, folder = split_reward(name)
    if device.type != "cuda":
        dtype = torch.float32
    options: dict = {}
    if folder is not None:
        params = inspect.signature(_metric_factory(metric)).parameters
        options = {k: str(Path(folder).expanduser()) for k in ("weights_path", "processor_path") if k in params}
        if "weights_path" not in options:
            raise DistarError(f"sd.reward = '{name}': metric '{metric}' takes no local weights folder. "
                              f"Fix: drop '@{folder}'.")
    model = load_metric(metric, device=str(device), dtype=dtype_name(dtype, short=True), **options)
    if not callable(getattr(model, "score_tensor", None)):
        raise DistarError(f"Reward '{metric}' has no differentiable path (score_tensor). Choose one of: "
                          f"{', '.join(list(_DIFFERENTIABLE) + list(RANDOM_REWARDS))}.")
    return model


def reward_modules(metric) -> list[nn.Module]:
    """The networks inside a metric object (to freeze, move and check they never change)."""
    return [v for v in vars(metric).values() if isinstance(v, nn.Module)]
