"""LAION improved aesthetic predictor (the "aesthetic score" of SD/LAION-Aesthetics v2), batched.

Reference: christophschuhmann/improved-aesthetic-predictor, `simple_inference.py`: OpenAI CLIP
ViT-L/14 `encode_image(preprocess(image))`, L2-normalised, then an MLP 768-1024-128-64-16-1 with
dropouts and no activations (a linear map at eval time, trained with MSE on SAC+LOGOS+AVA1),
weights `sac+logos+ava1-l14-linearMSE.pth`. The score is on the 1-10 rating scale.

Backbone here: open_clip 'ViT-L-14' with OpenAI's weights and QuickGELU (open_clip's copy of
them, timm/vit_large_patch14_clip_224.openai), the same network as OpenAI's `clip` package: the
module names and state-dict keys are OpenAI's, and the parity test loads a state dict of the
`clip` package's own model class into ours.
The prompt is not used.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from evalsuite.metrics import preprocess as pp
from evalsuite.metrics.loading import (build_open_clip, freeze, load_strict, open_clip_records,
                                        open_clip_weights, provenance, resolve_dtype, resolve_file)
from evalsuite.metrics.base import EmbeddingMetric, MetricInfo, with_dtype
from evalsuite.models import read_state_dict, resolve_device

MLP_REPO, MLP_FILE = "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"


class AestheticMLP(nn.Module):
    """The improved-aesthetic-predictor head; layer indices match its state dict
    (layers.0/2/4/6/7), dropouts included (identity in eval mode)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AestheticScore(EmbeddingMetric):
    """`score(images) -> np.ndarray[N]` on the 1-10 scale; `score_tensor` is differentiable.

    `AestheticScore.from_pretrained(...)` loads the published files; the constructor wraps an
    already built open_clip model (or anything with `encode_image` and `visual.image_size`) and
    head (tests, benchmarks, the trainer, a world's learned metric).
    """

    needs_prompts = False
    info = MetricInfo(
        name="aesthetic",
        version="LAION-aesthetic-v2 (sac+logos+ava1-l14-linearMSE)",
        backbone="open_clip ViT-L-14 OpenAI weights (QuickGELU)",
        preprocessing="PIL bicubic short side->224, centre crop 224, RGB, CLIP mean/std; "
                      "L2-normalised embedding",
        label="Aesthetic", unit="LAION score (1-10)", decimals=2)

    def __init__(self, clip_model: nn.Module, mlp: AestheticMLP, device: str = "cpu",
                 dtype: str = "fp32", batch_size: int = 32, provenance: dict | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.clip = freeze(clip_model).to(self.device, self.dtype)
        self.mlp = freeze(mlp).to(self.device)  # the head stays fp32: 5 small matmuls
        self.batch_size = batch_size
        self.image_size = int(np.atleast_1d(self.clip.visual.image_size)[0])
        self.provenance = provenance or {"injected": True}
        self.info = with_dtype(type(self).info, self.dtype)

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """What from_pretrained reads from the hub (evalsuite.needs): the MLP, then the CLIP."""
        from evalsuite.needs import HubNeed, open_clip_needs
        return ([HubNeed(f"{name}: LAION aesthetic MLP", MLP_REPO, (MLP_FILE,), (MLP_FILE,),
                         revision=options.get("revision"), env_var="DISTAR_AESTHETIC_PATH")]
                + open_clip_needs(f"{name}: OpenAI CLIP ViT-L/14", "ViT-L-14", "openai",
                                  "DISTAR_AESTHETIC_CLIP_PATH", option="clip_weights_path"))

    @classmethod
    def from_pretrained(cls, device: str = "auto", dtype: str = "fp32", batch_size: int = 32,
                        weights_path: str | None = None, clip_weights_path: str | None = None,
                        revision: str | None = None, clip_arch: str = "ViT-L-14"
                        ) -> "AestheticScore":
        """Options: device ('auto'), dtype ('fp32'; 'fp16'/'bf16' on GPU only), batch_size (32),
        weights_path (the MLP .pth; env DISTAR_AESTHETIC_PATH), clip_weights_path (open_clip
        ViT-L-14 OpenAI weights; env DISTAR_AESTHETIC_CLIP_PATH), revision (of the MLP hub
        repo), clip_arch (open_clip config of the backbone; 'ViT-L-14', other values only for
        tests)."""
        mlp = AestheticScore.hub_needs("aesthetic", {"revision": revision})[0]  # the declaration
        mlp_file = resolve_file("aesthetic predictor MLP", repo_id=mlp.repo_id,
                                filename=mlp.files[0], path=weights_path, env_var=mlp.env_var,
                                revision=mlp.revision)
        clip_file = open_clip_weights("aesthetic predictor CLIP ViT-L/14", "ViT-L-14", "openai",
                                      path=clip_weights_path, env_var="DISTAR_AESTHETIC_CLIP_PATH",
                                      option="clip_weights_path")
        # Checked before either file is read.
        prov = {"mlp": provenance(mlp_file, "aesthetic predictor MLP", role="aesthetic_mlp"),
                "clip": provenance(clip_file, "aesthetic predictor CLIP ViT-L/14"),
                **open_clip_records(clip_arch, tokenizer=False)}  # no text: no tokenizer
        mlp = AestheticMLP(768)
        load_strict(mlp, read_state_dict(mlp_file), f"aesthetic predictor MLP {mlp_file}")
        clip = build_open_clip(clip_arch, read_state_dict(clip_file), quick_gelu=True)
        return cls(clip, mlp, device, dtype, batch_size, prov)

    def _score(self, pixels: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        emb = self.clip.encode_image(pixels.to(self.device, self.dtype)).float()
        return self.mlp(F.normalize(emb, dim=-1)).squeeze(-1)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([pp.clip_pil(im, self.image_size) for im in images])

    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str] | None = None
                     ) -> torch.Tensor:
        """images: [N, 3, H, W] in [0, 1]; gradients flow to them."""
        return self._score(pp.clip_tensor(images.float(), self.image_size))
