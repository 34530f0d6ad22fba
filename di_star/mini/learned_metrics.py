"""The mini world's LEARNED metrics: the existing metric classes with the mini build's weights.

- `mini_pickscore`: PickScore (the class, its objective and unit: cosine) on the proxy reward
  CLIPModel the build trained on gold-judge preference pairs (world/proxy_reward);
- `mini_aesthetic`: AestheticScore's head (the LAION MLP shape) on mini-CLIP image embeddings;
- `mini_clip`: ClipScore (100 x cosine) with the mini CLIP (world/clip), no prefix, no
  pre-resize (the images are 64 px, the backbone's own size).
Each carries its own `info.name` and a version naming the world's manifest hash, so its columns
never mix with the real metrics' or with another build's. Weights come from
di_star.mini.weights.mini_dir() ($DISTAR_MINI_DIR, else the shipped copy), or `world_dir=`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from distar.core.errors import WeightsMissingError

from evalsuite.metrics.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from evalsuite.metrics.aesthetic import AestheticMLP, AestheticScore
from evalsuite.metrics.clip_score import ClipScore
from evalsuite.metrics.diversity import MIN_K, Diversity, ImageEmbedder
from evalsuite.metrics.pickscore import PickScore
from evalsuite.metrics.loading import folder_records
from evalsuite.metrics.base import MetricInfo, require_fp32, with_dtype
from di_star.mini import weights as mw
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
    """A transformers CLIPModel folder in fp32 whatever its stored dtype, safetensors only."""
    from transformers import CLIPModel
    return CLIPModel.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True,
                                     local_files_only=True).eval()


class _MiniWorldWeights:
    """A real metric class with the mini world's weights: `from_pretrained(world_dir=...)`
    builds it with the subclass's `_build(root, ...)` and names the world in `info` (its own
    name, a version carrying the manifest hash) and in `provenance`."""
    mini_name = mini_version = mini_backbone = mini_label = ""
    mini_components: tuple[str, ...] = ()  # the world's folders the metric reads

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        return []  # the world's own folders (the plug-in's check), nothing from the hub

    @classmethod
    def version_name(cls) -> str:
        """The version's first part (a ladder rung adds its own weights' hash)."""
        return cls.mini_version

    @classmethod
    def version_key(cls, world_dir: str | None = None, dtype: str = "fp32",
                    **_options) -> str | None:
        """`from_pretrained(...).info.key` from the world's manifest alone, no weights read (a
        finished rerun loads nothing; the runner checks it against the loaded metric's key)."""
        root = _root(world_dir)
        info = MetricInfo(cls.mini_name, _version(cls.version_name(), root), cls.mini_backbone, _PRE)
        try:
            return with_dtype(info, dtype).key
        except ValueError:  # an unknown dtype name: loading reports it clearly
            return None

    @classmethod
    def from_pretrained(cls, device: str = "auto", dtype: str = "fp32", batch_size: int = 64,
                        world_dir: str | None = None):
        root = _root(world_dir)
        metric = cls._build(root, device, dtype, batch_size)
        metric.info = with_dtype(replace(metric.info, name=cls.mini_name,
                                         version=_version(cls.version_name(), root),
                                         backbone=cls.mini_backbone, preprocessing=_PRE,
                                         label=cls.mini_label, decimals=3),
                                 metric.dtype)
        metric.provenance = {"world": str(root), "manifest": mw.manifest_digest(root),
                             **{c: folder_records(mw.component_dir(c, root), skip_weights=False)
                                for c in cls.mini_components}}
        return metric


class MiniPickScore(_MiniWorldWeights, PickScore):
    """PickScore on the mini proxy reward (cosine, PickScore's paper unit)."""
    mini_name, mini_version = "mini_pickscore", "mini-PickScore/cos"
    mini_components = ("proxy_reward",)
    mini_label = "Proxy PickScore"
    mini_backbone = ("transformers CLIPModel, mini proxy reward (PickScore objective on "
                     "gold-judge preference pairs)")

    @classmethod
    def _build(cls, root: Path, device: str, dtype: str, batch_size: int) -> "MiniPickScore":
        folder = str(mw.component_dir("proxy_reward", root))
        # PickScore's own loader (the next from_pretrained in the MRO), building this class.
        return super(_MiniWorldWeights, cls).from_pretrained(
            device=device, dtype=dtype, batch_size=batch_size, weights_path=folder,
            processor_path=folder)


class MiniProxyRung(MiniPickScore):
    """A rung of the proxy ladder (di_star.mini.proxy_ladder): the shipped proxy with the rung's
    fine-tuned tensors (data/proxy_ladder/<rung>/delta.safetensors) loaded over it. Its label
    names its measured agreement with the gold judge on held-out generator-sample pairs."""
    mini_backbone = ("transformers CLIPModel, mini proxy reward fine-tuned on gold-labelled "
                     "generator samples (proxy ladder)")

    @classmethod
    def version_name(cls) -> str:
        from di_star.mini.proxy_ladder import rung_entry
        return f"{cls.mini_version}/{rung_entry(cls.mini_name)['sha256'][:12]}"

    @classmethod
    def from_pretrained(cls, device: str = "auto", dtype: str = "fp32", batch_size: int = 64,
                        world_dir: str | None = None):
        from di_star.mini.proxy_ladder import rung_entry, rung_label
        metric = super().from_pretrained(device, dtype, batch_size, world_dir)
        metric.info = replace(metric.info, label=rung_label(cls.mini_name))
        entry = rung_entry(cls.mini_name)
        metric.provenance["ladder"] = {k: entry[k] for k in ("file", "sha256", "agreement",
                                                             "agreement_ci", "spearman")}
        return metric

    @classmethod
    def _build(cls, root: Path, device: str, dtype: str, batch_size: int) -> "MiniProxyRung":
        from di_star.mini.proxy_ladder import apply_delta, rung_delta
        metric = super()._build(root, device, dtype, batch_size)
        apply_delta(metric.model, rung_delta(cls.mini_name, root))
        return metric


def _rung(name: str) -> type:
    return type(f"MiniProxy{name[-2:].upper()}", (MiniProxyRung,),
                {"mini_name": name, "mini_version": f"mini-proxy-{name[-2:]}/cos",
                 "mini_label": f"Proxy {name[-2:]}", "__module__": __name__})


MiniProxyR1, MiniProxyR2, MiniProxyR3 = (_rung(f"mini_proxy_r{k}") for k in (1, 2, 3))


class MiniAesthetic(_MiniWorldWeights, AestheticScore):
    """AestheticScore with the mini MLP on mini-CLIP image embeddings (1-10 scale)."""
    mini_name, mini_version = "mini_aesthetic", "mini-aesthetic (gold ratings)"
    mini_components = ("clip", "aesthetic")
    mini_label = "Aesthetic (mini)"
    mini_backbone = "mini CLIPModel image tower + LAION aesthetic MLP shape"

    @classmethod
    def _build(cls, root: Path, device: str, dtype: str, batch_size: int) -> "MiniAesthetic":
        return cls(HFClipBackbone(load_clip_model(mw.component_dir("clip", root))),
                   load_aesthetic_head(mw.component_dir("aesthetic", root)),
                   device=device if device != "auto" else "cpu", dtype=dtype,
                   batch_size=batch_size)


def load_aesthetic_head(folder: Path) -> AestheticMLP:
    """The mini world's aesthetic MLP (config.json's input_size, model.safetensors), in fp32."""
    cfg = json.loads((folder / "config.json").read_text())
    mlp = AestheticMLP(int(cfg["input_size"]))
    mlp.load_state_dict({k: v.float() for k, v in
                         read_state_dict(folder / "model.safetensors").items()}, strict=True)
    return mlp


class MiniClip(_MiniWorldWeights, ClipScore):
    """ClipScore (100 x cosine) with the mini CLIP."""
    mini_name, mini_version = "mini_clip", "mini-CLIPScore 100cos"
    mini_components = ("clip",)
    mini_label = "CLIP (mini)"
    mini_backbone = "transformers CLIPModel, mini CLIP"

    @classmethod
    def _build(cls, root: Path, device: str, dtype: str, batch_size: int) -> "MiniClip":
        folder = mw.component_dir("clip", root)
        return cls(HFClipBackbone(load_clip_model(folder)), ClipTokens(folder), "mini CLIP",
                   OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, prefix="", pre_resize=None,
                   device=device if device != "auto" else "cpu", dtype=dtype,
                   batch_size=batch_size)


def mini_clip_folder(path: str | None = None) -> Path:
    """The mini CLIP folder: `path`, else $DISTAR_MINI_DIR/clip, else the shipped copy."""
    if path:
        return Path(path)
    return mw.mini_dir() / "clip"


class MiniDiversity(Diversity):
    """`diversity` in the mini world's CLIP image space (the image tower of a transformers
    CLIPModel folder, run in fp32 whatever its stored dtype)."""
    name, label = "mini_diversity", "Diversity (mini)"
    fp32_only = True  # the mini CLIP runs in fp32: a bf16 / fp16 request is refused

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        return []  # the world's CLIP folder (the plug-in's check), nothing from the hub

    @classmethod
    def from_pretrained(cls, clip_path: str | None = None, min_k: int = MIN_K,
                        device: str = "auto", batch_size: int = 64, dtype: str = "fp32",
                        **_shared_options) -> "MiniDiversity":
        """Options: clip_path (a CLIPModel folder; default $DISTAR_MINI_DIR/clip, else
        di_star/mini/data/clip), min_k, device, batch_size, dtype (fp32 only)."""
        require_fp32(cls.name, dtype)
        folder = mini_clip_folder(clip_path)
        if not (folder / "config.json").is_file():
            raise WeightsMissingError(
                "mini CLIP (mini_diversity)", str(folder / "config.json"),
                "build the mini world (`distar lab build mini --out DIR`) and pass "
                "clip_path=DIR/clip or set DISTAR_MINI_DIR=DIR")
        cfg_file = folder / "preprocessor_config.json"
        proc = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        clip = ClipScore(HFClipBackbone(load_clip_model(folder)), None, "mini CLIP",
                         proc.get("image_mean"), proc.get("image_std"), device=device,
                         batch_size=batch_size)
        weights = folder / "model.safetensors"
        tag = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else "?"
        return cls(ImageEmbedder(clip, f"mini CLIP image tower sha256:{tag}"), min_k,
                   {"clip": folder_records(folder, skip_weights=False)})
