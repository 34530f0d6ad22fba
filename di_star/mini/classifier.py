"""The mini world's attribute classifier (GenEval's role): a small CNN that reads, for each of the
3x3 grid cells, whether an object is there and its shape, colour and size, plus the background.
Counts and positions follow from the cells (the world puts one object per cell), so
`detect(images)` returns a Scene and the world's own semantics (`world.request_checks`) decide
which of a prompt's asked attributes an image satisfies.

Trained on ground-truth renders only (`train_attribute_classifier`), saved as safetensors +
config.json, loaded without pickle. The per-cell embeddings (9 x cell_dim) are also the
feature space of the mini world's Frechet distance (`mini_fd`): a space trained on exactly the
attributes the world has, available without the mini CLIP.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from di_star.mini.weights import mini_dir
from di_star.mini.scene import (BACKGROUNDS, COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, SIZES,
                                Obj, Scene, render, sample_scene)

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def default_folder() -> Path:
    """$DISTAR_MINI_DIR/classifier when set (a built world elsewhere), else the shipped copy."""
    return mini_dir() / "classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    width: int = 16        # channels of the first conv; then 2x and 3x
    cell_dim: int = 32     # per-cell embedding size
    version: str = "mini-attr-v1"


CROP = 24                     # px; a cell is 21.3 px, so an object jittered in it fits whole
CROP_STARTS = (1, 20, 39)     # crops centred on the cell centres 13, 32, 51


def cell_crops(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, 64, 64] -> [N, 9, 3, CROP, CROP], cells row-major (POSITIONS order)."""
    return torch.stack([x[:, :, r:r + CROP, c:c + CROP] for r in CROP_STARTS
                        for c in CROP_STARTS], 1)


class AttributeClassifier(nn.Module):
    """[N, 3, 64, 64] in [0, 1] -> logits per cell: shape [N, 9, 1 + |SHAPES|] (index 0 = empty),
    colour [N, 9, |COLOURS|], size [N, 9, 2]; background [N, |BACKGROUNDS|].
    One small CNN, shared by the 9 cells, reads a 24 px crop around each cell centre: the world
    puts at most one object per cell, so this is a detector whose every example is local, and it
    learns in a few hundred steps on a CPU where a whole-image net needs thousands."""

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        block = lambda i, o, stride: [nn.Conv2d(i, o, 3, stride, 1, bias=False),
                                      nn.BatchNorm2d(o), nn.ReLU()]
        self.cell_net = nn.Sequential(  # 24 -> 24 -> 12 -> 6
            *block(3, w, 1), *block(w, 2 * w, 2), *block(2 * w, 3 * w, 2),
            nn.Flatten(), nn.Linear(3 * w * 36, cfg.cell_dim), nn.ReLU())
        self.heads = nn.Linear(cfg.cell_dim, 1 + len(SHAPES) + len(COLOURS) + len(SIZES))
        self.background = nn.Linear(3 * 8, len(BACKGROUNDS))  # from the side borders, 8 bands

    def crop_embeddings(self, crops: torch.Tensor) -> torch.Tensor:
        """[M, 3, CROP, CROP] in [0, 1] -> [M, cell_dim]."""
        return self.cell_net((crops - 0.5) / 0.25)

    def crop_logits(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.heads(self.crop_embeddings(crops))
        s, c = 1 + len(SHAPES), len(COLOURS)
        return {"shape": out[..., :s], "colour": out[..., s:s + c], "size": out[..., s + c:]}

    def background_logits(self, x: torch.Tensor) -> torch.Tensor:
        """From the two outermost columns on each side (objects never reach them), averaged in
        8 horizontal bands: plain backgrounds are flat, the gradient is vertical."""
        sides = torch.cat([x[..., :2], x[..., -2:]], -1).mean(-1, keepdim=True)  # [N, 3, H, 1]
        bands = F.adaptive_avg_pool2d(sides, (8, 1)).flatten(1)
        return self.background((bands - 0.5) / 0.25)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 9 * cell_dim]: the per-cell embeddings (the mini FD's feature space)."""
        n = x.shape[0]
        return self.crop_embeddings(cell_crops(x).flatten(0, 1)).view(n, -1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        out = {k: v.view(n, 9, -1) for k, v in self.crop_logits(cell_crops(x).flatten(0, 1)).items()}
        return {**out, "background": self.background_logits(x)}


def to_tensor(images: Sequence[Image.Image | str]) -> torch.Tensor:
    """Images (PIL or paths) as [N, 3, 64, 64] floats in [0, 1]; other sizes are resized
    (bilinear), so a model drawing at another resolution is read the same way."""
    arrs = []
    for im in images:
        if not isinstance(im, Image.Image):
            with Image.open(im) as f:
                im = f.convert("RGB")
        im = im.convert("RGB")
        if im.size != (IMAGE_SIZE, IMAGE_SIZE):
            im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        arrs.append(np.asarray(im))
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0


def scene_labels(scene: Scene) -> dict[str, np.ndarray]:
    """Targets of one scene: per cell shape (0 = empty), colour and size (-1 where empty)."""
    shape, colour, size = np.zeros(9, np.int64), np.full(9, -1), np.full(9, -1)
    for o in scene.objects:
        i = POSITIONS.index(o.position)
        shape[i], colour[i], size[i] = (1 + SHAPES.index(o.shape), COLOURS.index(o.colour),
                                        SIZES.index(o.size))
    return {"shape": shape, "colour": colour, "size": size,
            "background": np.array(BACKGROUNDS.index(scene.background))}


def render_dataset(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n jittered ground-truth renders of random scenes with their per-cell labels; item i
    depends only on (seed, i)."""
    images, labels = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 7])  # 7: a stream apart from training_pairs'
        scene = sample_scene(rng)
        images.append(render(scene, rng))
        labels.append(scene_labels(scene))
    stacked = {k: torch.from_numpy(np.stack([lab[k] for lab in labels])) for k in labels[0]}
    return to_tensor(images), stacked


def loss_per_crop(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per crop: cross-entropy of the shape (0 = empty), plus colour and size where occupied."""
    occupied = y["shape"] > 0
    ce = lambda k: F.cross_entropy(out[k], y[k].clamp(min=0), reduction="none")
    return ce("shape") + (ce("colour") + ce("size")) * occupied


@dataclass(frozen=True)
class TrainRecipe:
    n: int = 4000           # training renders (scenes)
    epochs: int = 4
    batch_size: int = 256   # crops
    lr: float = 3e-3
    empty_ratio: float = 0.5  # empty crops kept per occupied one: 8 of 9 cells are empty on average


def train_attribute_classifier(out_dir: str | Path, seed: int = 0, n: int = 4000,
                               cfg: ClassifierConfig = ClassifierConfig(),
                               recipe: TrainRecipe | None = None,
                               log=None) -> Path:
    """Train on n fresh ground-truth renders and write out_dir/{model.safetensors, config.json}
    (atomically). Deterministic given (seed, n, cfg, recipe) and the torch thread count.
    `recipe` overrides n. Every occupied cell crop is used, with `empty_ratio` as many empty ones
    (redrawn each epoch); the background head trains on the same images in the same loop."""
    from distar.core.atomic import save_tensors, write_text
    recipe = recipe or TrainRecipe(n=n)
    t0 = time.time()
    x, y = render_dataset(recipe.n, seed)
    t_render = time.time() - t0
    crops = cell_crops(x).flatten(0, 1)                                # [9n, 3, 24, 24]
    crop_y = {k: y[k].reshape(-1) for k in ("shape", "colour", "size")}
    occupied = torch.nonzero(crop_y["shape"] > 0).squeeze(1)
    empty = torch.nonzero(crop_y["shape"] == 0).squeeze(1)
    n_empty = min(len(empty), int(recipe.empty_ratio * len(occupied)))
    torch.manual_seed(seed)
    model = AttributeClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    per_epoch = (len(occupied) + n_empty + recipe.batch_size - 1) // recipe.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.epochs * per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(recipe.epochs):
        chosen = torch.cat([occupied, empty[torch.randperm(len(empty), generator=gen)[:n_empty]]])
        chosen = chosen[torch.randperm(len(chosen), generator=gen)]
        total = 0.0
        for b in range(per_epoch):
            idx = chosen[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            loss = loss_per_crop(model.crop_logits(crops[idx]),
                                 {k: v[idx] for k, v in crop_y.items()}).mean()
            img = idx // 9  # the background head sees the images these crops came from
            loss = loss + F.cross_entropy(model.background_logits(x[img]), y["background"][img])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log:
            log(f"classifier epoch {epoch + 1}/{recipe.epochs}: loss {total / len(chosen):.4f}")
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(model.state_dict(), out_dir / WEIGHTS_FILE)
    meta = {**asdict(cfg), "train": {**asdict(recipe), "seed": seed,
                                     "render_s": round(t_render, 1),
                                     "wall_s": round(time.time() - t0, 1)}}
    write_text(out_dir / CONFIG_FILE, json.dumps(meta, indent=2))
    return out_dir


def load_attribute_classifier(path: str | Path | None = None) -> AttributeClassifier:
    """The classifier in folder `path` (default: `default_folder()`)."""
    from safetensors.torch import load_file
    folder = Path(path) if path else default_folder()
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / f).is_file()]
    if missing:
        raise WeightsMissingError(
            "mini attribute classifier", ", ".join(str(folder / f) for f in missing),
            "build the mini world (`distar lab build mini --out DIR`) and pass "
            "classifier_path=DIR/classifier, or train one alone with "
            "di_star.mini.classifier.train_attribute_classifier(DIR)")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    known = {f.name for f in fields(ClassifierConfig)}
    cfg = ClassifierConfig(**{k: v for k, v in meta.items() if k in known})
    model = AttributeClassifier(cfg)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    except RuntimeError as e:
        raise DistarError(f"{folder / WEIGHTS_FILE} does not match its config.json "
                          f"({cfg}): {str(e).splitlines()[0]}. Rebuild the classifier.") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def detect(model: AttributeClassifier, images: Sequence[Image.Image | str],
           batch_size: int = 256) -> list[Scene]:
    """What the classifier sees in each image, as a Scene (one object per occupied cell)."""
    scenes = []
    for start in range(0, len(images), batch_size):
        out = model(to_tensor(images[start:start + batch_size]))
        shape, colour = out["shape"].argmax(-1), out["colour"].argmax(-1)
        size, bg = out["size"].argmax(-1), out["background"].argmax(-1)
        for n in range(shape.shape[0]):
            objs = tuple(Obj(SHAPES[int(shape[n, i]) - 1], COLOURS[int(colour[n, i])],
                             SIZES[int(size[n, i])], POSITIONS[i])
                         for i in range(9) if int(shape[n, i]) > 0)
            scenes.append(Scene(objs, BACKGROUNDS[int(bg[n])]))
    return scenes


@torch.no_grad()
def held_out_accuracy(model: AttributeClassifier, n: int = 2000, seed: int = 10_000) -> dict:
    """Accuracy on n fresh renders (a seed stream the trainer does not use unless asked):
    per occupied cell for shape / colour / size, occupancy per cell, background per image,
    and whole-scene exact match."""
    x, y = render_dataset(n, seed)
    out = model(x)
    occ = y["shape"] > 0
    pred = {k: v.argmax(-1) for k, v in out.items()}
    exact = ((pred["shape"] == y["shape"]).all(1)
             & ((pred["colour"] == y["colour"]) | ~occ).all(1)
             & ((pred["size"] == y["size"]) | ~occ).all(1)
             & (pred["background"] == y["background"]))
    return {"n": n, "seed": seed,
            "occupancy": float(((pred["shape"] > 0) == occ).float().mean()),
            "shape": float((pred["shape"] == y["shape"])[occ].float().mean()),
            "colour": float((pred["colour"] == y["colour"])[occ].float().mean()),
            "size": float((pred["size"] == y["size"])[occ].float().mean()),
            "background": float((pred["background"] == y["background"]).float().mean()),
            "scene_exact": float(exact.float().mean())}
