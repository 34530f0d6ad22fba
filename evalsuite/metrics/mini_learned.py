"""The mini world's LEARNED metrics: the existing metric classes with the mini build's weights.

- `mini_pickscore`: PickScore (the class, its objective and unit: cosine) on the proxy reward
  CLIPModel the build trained on gold-judge preference pairs (world/proxy_reward);
- `mini_aesthetic`: AestheticScore's head (the LAION MLP shape) on mini-CLIP image embeddings;
- `mini_clip`: ClipScore (100 x cosine) with the mini CLIP (world/clip), no prefix, no
  pre-resize (the images are 64 px, the backbone's own size).
Each carries its own `info.name` and a version naming the world's manifest hash, so its columns
never mix with the real metrics' or with another build's. Weights come from
evalsuite.mini.weights.mini_dir() ($DISTAR_MINI_DIR, else the shipped copy), or `world_dir=`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from evalsuite.metrics._preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from evalsuite.metrics.aesthetic import AestheticMLP, AestheticScore
from evalsuite.metrics.base import MetricInfo
from evalsuite.metrics.clip_score import ClipScore
from evalsuite.metrics.pickscore import PickScore
from evalsuite.mini import weights as mw
from evalsuite.models.loading import read_state_dict

_PRE = "PIL bicubic short side->64, centre crop 64, CLIP mean/std"


def _root(world_dir: str | None) -> Path:
    return Path(world_dir).expanduser() if world_dir else mw.mini_dir()


def _version(name: str, root: Path) -> str:
    return f"{name}/world-{mw.manifest_digest(root)}"


class HFClipBackbone(nn.Module):
    """A transformers CLIPModel behind open_clip's interface (`encode_image`, `encode_text`,
    `visual.image_size`), which ClipScore and AestheticScore call."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.visual = nn.Module()
        self.visual.image_size = int(model.config.vision_config.image_size)

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(input_ids=ids))


class ClipTokens:
    """open_clip-style tokenizer call: list of texts -> [N, 77] ids, padded with the end token."""

    def __init__(self, folder: Path):
        from transformers import CLIPTokenizer
        self.tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)

    def __call__(self, texts) -> torch.Tensor:
        return self.tok(list(texts), padding="max_length", truncation=True, max_length=77,
                        return_tensors="pt")["input_ids"]


def load_clip_model(folder: Path):
    from transformers import CLIPModel
    return CLIPModel.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True).eval()


class MiniPickScore(PickScore):
    """PickScore on the mini proxy reward (cosine, PickScore's paper unit)."""

    def __init__(self, device: str = "auto", dtype: str = "fp32", batch_size: int = 64,
                 world_dir: str | None = None):
        root = _root(world_dir)
        folder = mw.component_dir("proxy_reward", root)
        super().__init__(device=device, dtype=dtype, batch_size=batch_size,
                         weights_path=str(folder), processor_path=str(folder))
        self.info = MetricInfo(
            name="mini_pickscore", version=_version("mini-PickScore/cos", root),
            backbone="transformers CLIPModel, mini proxy reward (PickScore objective on "
                     "gold-judge preference pairs)", preprocessing=_PRE)
        self.provenance = {"world": str(root), "manifest": mw.manifest_digest(root)}


def mini_aesthetic(device: str = "auto", dtype: str = "fp32", batch_size: int = 64,
                   world_dir: str | None = None) -> AestheticScore:
    """AestheticScore with the mini MLP on mini-CLIP image embeddings (1-10 scale)."""
    root = _root(world_dir)
    folder = mw.component_dir("aesthetic", root)
    cfg = json.loads((folder / "config.json").read_text())
    mlp = AestheticMLP(int(cfg["input_size"]))
    mlp.load_state_dict({k: v.float() for k, v in
                         read_state_dict(folder / "model.safetensors").items()}, strict=True)
    clip = HFClipBackbone(load_clip_model(mw.component_dir("clip", root)))
    metric = AestheticScore.from_modules(clip, mlp, device=device if device != "auto" else "cpu",
                                         dtype=dtype, batch_size=batch_size)
    metric.info = MetricInfo(
        name="mini_aesthetic", version=_version("mini-aesthetic (gold ratings)", root),
        backbone="mini CLIPModel image tower + LAION aesthetic MLP shape", preprocessing=_PRE)
    metric.provenance = {"world": str(root), "manifest": mw.manifest_digest(root)}
    return metric


def mini_clip(device: str = "auto", dtype: str = "fp32", batch_size: int = 64,
              world_dir: str | None = None) -> ClipScore:
    """ClipScore (100 x cosine) with the mini CLIP."""
    root = _root(world_dir)
    folder = mw.component_dir("clip", root)
    metric = ClipScore.from_modules(HFClipBackbone(load_clip_model(folder)), ClipTokens(folder),
                                    "mini CLIP", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, prefix="",
                                    pre_resize=None, device=device if device != "auto" else "cpu",
                                    dtype=dtype, batch_size=batch_size)
    metric.info = MetricInfo(name="mini_clip", version=_version("mini-CLIPScore 100cos", root),
                             backbone="transformers CLIPModel, mini CLIP", preprocessing=_PRE)
    metric.provenance = {"world": str(root), "manifest": mw.manifest_digest(root)}
    return metric
