"""ImageReward v1.0 (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation"): a BLIP ViT-L/16 + BERT cross-attention reward, normalised as
`(r - 0.16717362830052426) / 1.0333394966054072`.

Why a native port and not the reference package behind a compat shim: image-reward 1.5 scores one
prompt per call and one image per forward, needs transformers 4.x helpers that moved or vanished
in 5.x (plus fairscale, and its package import pulls in diffusers/datasets for its trainer), and
its BLIP text model is 900 lines of which ImageReward uses one path. The port
(`evalsuite/metrics/blip.py`, ~300 lines) keeps the reference parameter names, so `ImageReward.pt`
loads unchanged, batches any mix of prompts and images, runs in fp16/bf16 on a GPU, and gives
gradients for the trainer. The reference package is still run, through the small test-only shim
di_star/bench/imagereward_ref.py, by tests/test_metric_imagereward.py, which checks this port against the
package's own public `ImageReward.score` to 1e-4 in fp32.

Weights: `ImageReward.pt` (a plain state dict, read with `torch.load(weights_only=True)`) and
`med_config.json` from the hub repo THUDM/ImageReward, or a local copy via `weights_path=` /
$DISTAR_IMAGEREWARD_PATH (the .pt file, or a folder holding both files). Tokenizer:
`bert-base-uncased` plus the two special tokens BLIP adds, or a local folder with its vocab.txt
via `tokenizer_path=` / $DISTAR_IMAGEREWARD_TOKENIZER. Under transformers 5 `BertTokenizer` is
the Rust WordPiece (the package ran the Python one under 4.x); both follow BERT's basic +
WordPiece rules, but their agreement on the real vocab could not be checked offline here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from distar.core.dtypes import dtype_name
from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.metrics import preprocess as pp
from evalsuite.metrics.loading import file_record, folder_records, provenance, resolve_dtype
from evalsuite.metrics.base import MetricInfo, run_batches
from evalsuite.metrics.blip import (REWARD_MEAN, REWARD_STD, BlipRewardConfig,
                                    ImageRewardModel)
from evalsuite.models import read_state_dict, resolve_device

MODEL_NAME = "ImageReward-v1.0"
HUB_REPO = "THUDM/ImageReward"
WEIGHTS_FILE = "ImageReward.pt"
CONFIG_FILE = "med_config.json"
WEIGHTS_ENV = "DISTAR_IMAGEREWARD_PATH"
TOKENIZER_ID = "bert-base-uncased"
TOKENIZER_ENV = "DISTAR_IMAGEREWARD_TOKENIZER"
MAX_TOKENS = 35                      # the reference tokenises with max_length=35


# ---- Files ---------------------------------------------------------------------------------------

def resolve_weights(weights_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(ImageReward.pt, med_config.json): from `weights_path` (the .pt file or a folder holding
    both), else $DISTAR_IMAGEREWARD_PATH, else the Hugging Face cache / hub."""
    fix = (f"pass weights_path=/path/to/{WEIGHTS_FILE} (with {CONFIG_FILE} beside it, or a folder "
           f"holding both) or set {WEIGHTS_ENV}=that path; both files are in the hub repo "
           f"{HUB_REPO}")
    explicit = weights_path or os.environ.get(WEIGHTS_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        weights = path / WEIGHTS_FILE if path.is_dir() else path
        config = weights.parent / CONFIG_FILE
        for file in (weights, config):
            if not file.is_file():
                raise WeightsMissingError(MODEL_NAME, str(file), fix)
        return weights, config
    from evalsuite.hub import hub_download  # never hangs: reads only the cache when offline

    try:
        return tuple(Path(hub_download(HUB_REPO, name, model=MODEL_NAME, env_var=WEIGHTS_ENV))
                     for name in (WEIGHTS_FILE, CONFIG_FILE))
    except WeightsMissingError as e:
        raise WeightsMissingError(MODEL_NAME, e.file, fix) from None


def load_tokenizer(source: str | os.PathLike | None = None):
    """BLIP's tokenizer: bert-base-uncased (or a local folder with its vocab.txt) plus the
    special tokens BLIP's `init_tokenizer` adds ('[DEC]' as bos, '[ENC]'), so ids match."""
    from transformers import BertTokenizer

    from evalsuite.hub import local_only

    source = str(source or os.environ.get(TOKENIZER_ENV) or TOKENIZER_ID)
    missing = WeightsMissingError(
        f"{MODEL_NAME} tokenizer ({TOKENIZER_ID})", f"{source}/vocab.txt",
        f"pass tokenizer_path=/folder/with/vocab.txt or set {TOKENIZER_ENV}=that folder "
        f"(the files of the hub repo {TOKENIZER_ID})")
    try:
        tokenizer = BertTokenizer.from_pretrained(source, local_files_only=local_only())
    except (OSError, ValueError):
        raise missing from None
    # transformers 5 does not fail when it finds no vocab file: it returns a tokenizer whose
    # vocabulary is its five special tokens, which maps every word to [UNK].
    if set(tokenizer.get_vocab()) <= set(tokenizer.all_special_tokens):
        raise missing
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def tokenizer_records(source: str | os.PathLike | None = None) -> dict:
    """Every file of the tokenizer folder `load_tokenizer(source)` read (vocab.txt,
    tokenizer_config.json, ...), by path, sha256 and revision: the local folder, or the HF
    cache snapshot of bert-base-uncased."""
    source = str(source or os.environ.get(TOKENIZER_ENV) or TOKENIZER_ID)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(TOKENIZER_ID, "vocab.txt")
        folder = Path(cached).parent if isinstance(cached, str) else None
    return folder_records(folder) if folder is not None else {"missing": source}


# ---- Preprocessing -------------------------------------------------------------------------------

def preprocess_tensor(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The geometry of `preprocess.clip_pil` (the reference `_transform`) in torch, differentiable: [N, 3, H, W] in [0, 1] -> [N, 3, size, size].
    Antialiased bicubic (PIL's kernel, a = -0.5); torchvision's output-size and crop rounding.
    Unlike PIL it neither clamps the bicubic overshoot nor rounds to 8 bits."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
    if (new_h, new_w) != (height, width):
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False,
                               antialias=True)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    images = images[..., top:top + size, left:left + size]
    mean = images.new_tensor(pp.OPENAI_CLIP_MEAN)[:, None, None]
    std = images.new_tensor(pp.OPENAI_CLIP_STD)[:, None, None]
    return (images - mean) / std


# ---- Metric --------------------------------------------------------------------------------------

class ImageReward:
    """ImageReward v1.0, higher is better. `score` for evaluation (PIL images, the reference's
    preprocessing), `score_tensor` for training rewards (differentiable).

    `ImageReward.from_pretrained(...)` options, as every metric takes them: device ('auto'),
    dtype ('fp32'; 'bf16', or 'fp16' on GPU only), batch_size (32), weights_path
    (ImageReward.pt or a folder with it and med_config.json; env DISTAR_IMAGEREWARD_PATH),
    tokenizer_path (a folder with BERT's vocab.txt; env DISTAR_IMAGEREWARD_TOKENIZER).
    The constructor builds from a state dict in memory."""

    def __init__(self, state_dict: dict[str, torch.Tensor], config: BlipRewardConfig,
                 tokenizer, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", batch_size: int = 32,
                 provenance: dict | None = None):
        """Build from tensors in memory (tests with random weights, checkpoints already loaded).
        `state_dict` uses the reference module's names; its tensors are used in place."""
        if len(tokenizer) != config.vocab_size:  # one embedding row per token, as BLIP builds it
            raise DistarError(f"Tokenizer has {len(tokenizer)} tokens but the checkpoint's text "
                              f"encoder {config.vocab_size}: wrong tokenizer for {MODEL_NAME}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.tokenizer, self.config = tokenizer, config
        self.provenance = provenance or {"injected": True}
        self.model = _load_model(config, state_dict)
        self.model.requires_grad_(False).eval()
        self.model.to(device=self.device, dtype=self.dtype)
        self.model.mlp.float()  # the head is tiny and the reference runs it in fp32
        self.info = MetricInfo(
            name="imagereward", label="ImageReward", unit="normalised reward", decimals=3,
            version=MODEL_NAME,
            backbone=(f"BLIP ViT {config.vision_depth}x{config.vision_width} "
                      f"/{config.patch_size} + BERT {config.text_depth}x{config.text_width} "
                      f"cross-attn, MLP head, {dtype_name(self.dtype, short=True)}"),
            preprocessing=(f"PIL bicubic resize {config.image_size}, centre crop, CLIP mean/std; "
                           f"{TOKENIZER_ID} max {MAX_TOKENS} tokens; "
                           f"(r - {REWARD_MEAN:.5f}) / {REWARD_STD:.5f}"),
        )

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """What from_pretrained reads from the hub (evalsuite.needs): weights and config, then
        the BERT tokenizer."""
        from evalsuite.needs import HubNeed
        return [HubNeed(f"{name}: ImageReward v1.0 weights", HUB_REPO, (WEIGHTS_FILE, CONFIG_FILE),
                        (WEIGHTS_FILE,), env_var=WEIGHTS_ENV),
                HubNeed(f"{name}: its BERT tokenizer", TOKENIZER_ID,
                        ("vocab.txt", "?tokenizer_config.json", "?config.json"), ("vocab.txt",),
                        env_var=TOKENIZER_ENV, option="tokenizer_path", folder=True)]

    @classmethod
    def from_pretrained(cls, device: str | torch.device = "auto",
                        weights_path: str | os.PathLike | None = None,
                        dtype: str | torch.dtype = "fp32",
                        tokenizer_path: str | os.PathLike | None = None,
                        batch_size: int = 32) -> "ImageReward":
        """Options: see the class docstring."""
        weights_file, config_file = resolve_weights(weights_path)
        prov = {"weights": provenance(weights_file, MODEL_NAME),  # checked before it is read
                "med_config": file_record(config_file)}
        state_dict = read_state_dict(weights_file)
        med = json.loads(Path(config_file).read_text())
        try:
            config = BlipRewardConfig.from_checkpoint(state_dict, med)
        except KeyError as e:
            raise DistarError(f"{MODEL_NAME} checkpoint {weights_file} lacks the tensor {e}: "
                              f"not an ImageReward state dict. Fix: point weights_path= at the "
                              f"published {WEIGHTS_FILE}.") from None
        tokenizer = load_tokenizer(tokenizer_path)
        prov["tokenizer"] = tokenizer_records(tokenizer_path)
        return cls(state_dict, config, tokenizer, device, dtype, batch_size, prov)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask [N, 35], exactly as the reference tokenises one prompt."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, one per image, not one string")
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                                max_length=MAX_TOKENS, return_tensors="pt")
        return tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)

    def _check_lengths(self, n_images: int, prompts: Sequence[str]) -> None:
        if isinstance(prompts, str) or n_images != len(prompts):
            raise ValueError(f"need one prompt per image: {n_images} images, "
                             f"{'one string' if isinstance(prompts, str) else len(prompts)} prompts")

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """Reward of each (image, prompt) pair, any mix of prompts, in batches. -> float32 [N]"""
        self._check_lengths(len(images), prompts)

        def batch(sl: slice) -> torch.Tensor:
            # The reference `_transform` is open_clip's / OpenAI's eval transform, step for step.
            pixels = torch.stack([pp.clip_pil(im, self.config.image_size) for im in images[sl]])
            ids, mask = self.tokenize(prompts[sl])
            return self.model(pixels.to(device=self.device, dtype=self.dtype), ids, mask)
        return run_batches(len(images), self.batch_size, batch).numpy()

    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Differentiable reward of images [N, 3, H, W] in [0, 1]. -> float32 [N]"""
        self._check_lengths(images.shape[0], prompts)
        pixels = preprocess_tensor(images.to(self.device), self.config.image_size)
        ids, mask = self.tokenize(prompts)
        return self.model(pixels.to(self.dtype), ids, mask)


def _load_model(config: BlipRewardConfig, state_dict: dict) -> ImageRewardModel:
    """Build on the meta device (no random init of 447M weights) and take the checkpoint's
    tensors. Every parameter must be in the checkpoint; known unused entries are dropped and any
    other extra entry is reported."""
    with torch.device("meta"):
        model = ImageRewardModel(config)
    wanted = set(model.state_dict())
    missing = sorted(wanted - set(state_dict))
    if missing:
        raise DistarError(f"{MODEL_NAME} checkpoint lacks {len(missing)} tensors: "
                          f"{missing[:10]}{' ...' if len(missing) > 10 else ''}: not an "
                          f"ImageReward state dict. Fix: use the published {WEIGHTS_FILE}.")
    extra = sorted(k for k in state_dict if k not in wanted and not model.is_unused_key(k))
    if extra:
        raise DistarError(f"{MODEL_NAME} checkpoint has {len(extra)} tensors the model does not "
                          f"have, e.g. {extra[:3]}: not an ImageReward v1.0 state dict")
    try:
        model.load_state_dict({k: state_dict[k] for k in wanted}, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise DistarError(f"{MODEL_NAME} checkpoint does not fit its config: {e}") from None
    return model
