"""The mini world's gold judge: a fixed, documented, pure per-sample function of (image, prompt)
that STANDS FOR HUMAN PREFERENCE. It is used only to judge (the `mini_gold` metric) and to make
the synthetic preference pairs the proxy reward is trained on; nothing optimises it directly, so
a method that raises the learned proxy can be checked against the truth (reward hacking shows up
as proxy up, gold flat or down).

It reads pixels only (no learned model), in four steps:
1. Background: per row, the median of the two outermost columns on each side (the mini world's
   backgrounds are plain or vertical gradients). Foreground = pixels farther than FG_THRESHOLD
   (RGB Euclidean, 0-255) from their row's background.
2. Objects: 8-connected components of the foreground with at least MIN_AREA pixels. Per object:
   mean colour, centroid, maximum radius from the centroid, and three shape descriptors (fill of
   the bounding box, area over the circle of the maximum radius, solidity = area / convex hull).
3. Soft attribute posteriors per object: colour = softmax over the palette of -d^2 / (2 * 40^2)
   (d: RGB distance of the mean colour to each palette colour); shape = softmax over shapes of
   the Gaussian log-likelihood of the descriptors (means / spreads measured once on jittered
   ground-truth renders, SHAPE_STATS); size = logistic in the maximum radius divided by the
   shape's RADIUS_FACTOR, around 7.0 px, averaged over the shape posterior (normalised, small
   renders reach <= 6.3 px, large >= 7.7 px).
4. Score in [0, 1]:
     faithfulness F = mean of the items the prompt asks for:
       each group: match m_j of every object = product of the posteriors of the attributes the
         group names; the group's score is mean(top-`count` m_j) * exp(-sum of the remaining
         m_j) (missing objects score 0; extra matching objects cost), times the share of the
         top-`count` objects whose centroid lies in the asked region (when one is asked);
       relation: logistic in the centroid offset of the two groups' best matches (4 px margin);
       background: closeness of the estimated background to the asked one;
       colour mass: share of foreground pixels whose nearest palette colour is an asked colour.
     preference P = mean of: saturation (mean HSV saturation of the foreground / 0.8, capped at 1),
       size (foreground share of the image / 0.1, capped at 1), cleanliness (exp(-background
       residual / 8) x share of foreground in kept objects) and, only when the prompt asks no
       position or relation, centredness (1 - distance of the foreground's centroid from the
       image centre / 32).
     gold = 0.75 F + 0.25 P; a prompt asking nothing the world knows gets P alone.
So a ground-truth render of its own caption scores high, a render of another caption, a blank or
a noise image low; among faithful images, humans' stand-in prefers large, centred, saturated,
clean ones, which ground-truth renders are not always: the proxy has something to learn beyond
faithfulness, and DI* something to raise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from di_star.mini.scene import (BACKGROUND_RGB, COLOURS, GRADIENT, PALETTE, SHAPES, Group,
                                Request, in_region, parse_caption, position_to_cell)

VERSION = "mini-gold-v1"
FG_THRESHOLD = 60.0
MIN_AREA = 6
COLOUR_SIGMA = 40.0
SIZE_THRESHOLD, SIZE_SCALE = 7.0, 0.25
RELATION_MARGIN, RELATION_SCALE = 4.0, 2.0
WEIGHT_F = 0.75
# (fill, compactness, solidity): mean and spread per shape, measured on 600 jittered renders
# over 4 backgrounds (di_star/mini/probes/world_speed.py --calibrate prints them); spreads floored at 0.03.
SHAPE_STATS = {
    "circle": ((0.780, 0.866, 0.930), (0.039, 0.031, 0.03)),
    "square": ((0.856, 0.642, 0.931), (0.084, 0.03, 0.038)),
    "triangle": ((0.555, 0.452, 0.850), (0.034, 0.03, 0.03)),
    "star": ((0.482, 0.483, 0.648), (0.038, 0.031, 0.034)),
    "cross": ((0.618, 0.665, 0.781), (0.034, 0.035, 0.03)),
}
# A shape's maximum radius relative to a circle's of the same size class (same calibration):
# squares reach their corners, stars and crosses fall short of r.
RADIUS_FACTOR = {"circle": 1.0, "square": 1.19, "triangle": 1.06, "star": 0.9, "cross": 0.93}
_PALETTE = np.array([PALETTE[c] for c in COLOURS], np.float64)


@dataclass(frozen=True)
class Blob:
    """One foreground object as the judge sees it."""
    area: int
    colour: np.ndarray      # mean RGB
    centroid: tuple[float, float]  # (x, y) px
    radius: float
    descriptors: np.ndarray  # fill, compactness, solidity


@dataclass(frozen=True)
class Analysis:
    blobs: tuple[Blob, ...]
    background: np.ndarray   # [H, 3] per-row background estimate
    fg: np.ndarray           # bool [H, W]
    residual: float          # mean |pixel - background| outside the foreground
    kept_share: float        # share of foreground pixels inside kept objects


def analyse(image: Image.Image | np.ndarray) -> Analysis:
    """Background, foreground and objects of one image (any size; the world draws 64 px)."""
    # scipy here, not at the top: importing it costs ~0.7 s, and a finished rerun only needs
    # this module's VERSION (di_star.mini.metrics.MiniGold.version_key).
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError
    a = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image,
                   dtype=np.float64)
    border = np.concatenate([a[:, :2], a[:, -2:]], axis=1)
    bg = np.median(border, axis=1)  # [H, 3]
    dist = np.linalg.norm(a - bg[:, None, :], axis=2)
    fg = dist > FG_THRESHOLD
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    blobs, kept = [], 0
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        m = labels[sl] == i
        area = int(m.sum())
        if area < MIN_AREA:
            continue
        kept += area
        ys, xs = np.nonzero(m)
        ys, xs = ys + sl[0].start, xs + sl[1].start
        cy, cx = ys.mean(), xs.mean()
        radius = float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max()) + 0.5)
        h, w = m.shape
        pts = np.stack([xs, ys], 1).astype(np.float64)
        try:  # pixel squares' corners, so a 1-pixel-wide object still has a hull
            hull = ConvexHull(np.concatenate([pts + d for d in
                                              ((0, 0), (0, 1), (1, 0), (1, 1))])).volume
        except QhullError:
            hull = float(area)
        desc = np.array([area / (h * w), area / (np.pi * radius ** 2), min(1.0, area / hull)])
        blobs.append(Blob(area, a[ys, xs].mean(0), (float(cx), float(cy)), radius, desc))
    total = int(fg.sum())
    residual = float(np.abs(a - bg[:, None, :])[~fg].mean()) if (~fg).any() else 255.0
    return Analysis(tuple(blobs), bg, fg, residual, kept / total if total else 1.0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def colour_posterior(rgb: np.ndarray) -> dict[str, float]:
    d2 = ((_PALETTE - rgb) ** 2).sum(1)
    return dict(zip(COLOURS, _softmax(-d2 / (2 * COLOUR_SIGMA ** 2))))


def shape_posterior(desc: np.ndarray) -> dict[str, float]:
    ll = np.array([-0.5 * (((desc - np.array(mu)) / np.array(sd)) ** 2).sum()
                   for mu, sd in (SHAPE_STATS[s] for s in SHAPES)])
    return dict(zip(SHAPES, _softmax(ll)))


def size_posterior(radius: float, shape: dict[str, float]) -> dict[str, float]:
    large = sum(p / (1.0 + np.exp(-(radius / RADIUS_FACTOR[s] - SIZE_THRESHOLD) / SIZE_SCALE))
                for s, p in shape.items())
    return {"small": 1.0 - large, "large": large}


def _match(blob: Blob, g: Group) -> float:
    m = 1.0
    if g.colour:
        m *= colour_posterior(blob.colour)[g.colour]
    shape = shape_posterior(blob.descriptors)
    if g.shape:
        m *= shape[g.shape]
    if g.size:
        m *= size_posterior(blob.radius, shape)[g.size]
    return m


def _group_score(blobs: Sequence[Blob], g: Group) -> tuple[float, list[Blob]]:
    scored = sorted(((_match(b, g), k) for k, b in enumerate(blobs)), reverse=True)
    top, rest = scored[:g.count], scored[g.count:]
    if not top:
        return 0.0, []
    score = sum(m for m, _ in top) / g.count * float(np.exp(-sum(m for m, _ in rest)))
    best = [blobs[k] for _, k in top]
    if g.position:
        score *= np.mean([in_region(position_to_cell(*b.centroid), g.position) for b in best])
    return float(score), best


def _relation_score(a: Blob, b: Blob, relation: str) -> float:
    (xa, ya), (xb, yb) = a.centroid, b.centroid
    offset = {"above": yb - ya, "below": ya - yb, "left of": xb - xa, "right of": xa - xb}
    return float(1.0 / (1.0 + np.exp(-(offset[relation] - RELATION_MARGIN) / RELATION_SCALE)))


def _background_score(bg: np.ndarray, asked: str) -> float:
    if asked == "gradient":
        target = np.linspace(0, 1, len(bg))[:, None] * (np.subtract(GRADIENT[1], GRADIENT[0])) \
            + GRADIENT[0]
    else:
        target = np.broadcast_to(np.array(BACKGROUND_RGB[asked], np.float64), bg.shape)
    d = np.linalg.norm(bg - target, axis=1).mean()
    return float(np.exp(-(d / 40.0) ** 2))


def _saturation(a: np.ndarray, mask: np.ndarray) -> float:
    px = a[mask]
    if not len(px):
        return 0.0
    hi, lo = px.max(1), px.min(1)
    return float(np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-9), 0.0).mean())


def faithfulness(an: Analysis, image: np.ndarray, req: Request) -> float | None:
    """Mean of the prompt's asked items in [0, 1], or None when it asks nothing."""
    items, best = [], []
    for g in req.groups:
        s, b = _group_score(an.blobs, g)
        items.append(s)
        best.append(b)
    if req.relation and len(best) >= 2:
        items.append(_relation_score(best[0][0], best[1][0], req.relation)
                     if best[0] and best[1] else 0.0)
    if req.background:
        items.append(_background_score(an.background, req.background))
    asked = {g.colour for g in req.groups if g.colour}
    if asked:
        px = image[an.fg]
        if len(px):
            nearest = ((px[:, None, :] - _PALETTE[None]) ** 2).sum(2).argmin(1)
            items.append(float(np.isin(nearest, [COLOURS.index(c) for c in asked]).mean()))
        else:
            items.append(0.0)
    return float(np.mean(items)) if items else None


def preference(an: Analysis, image: np.ndarray, req: Request) -> float:
    """The prompt-independent part of the stand-in for taste, in [0, 1]."""
    h, w = an.fg.shape
    parts = [min(1.0, _saturation(image, an.fg) / 0.8),
             min(1.0, an.fg.mean() / 0.1),
             float(np.exp(-an.residual / 8.0)) * an.kept_share]
    if not req.relation and not any(g.position for g in req.groups):
        if an.fg.any():
            ys, xs = np.nonzero(an.fg)
            d = np.hypot(xs.mean() - (w - 1) / 2, ys.mean() - (h - 1) / 2)
            parts.append(max(0.0, 1.0 - d / 32.0))
        else:
            parts.append(0.0)
    return float(np.mean(parts))


def gold_one(image: Image.Image | np.ndarray, prompt: str) -> float:
    a = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image,
                   dtype=np.float64)
    an = analyse(a)
    req = parse_caption(prompt)
    p = preference(an, a, req)
    f = faithfulness(an, a, req)
    return p if f is None else WEIGHT_F * f + (1 - WEIGHT_F) * p


def gold_score(images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
    """Per-sample gold scores in [0, 1] (higher = preferred)."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    return np.array([gold_one(im, p) for im, p in zip(images, prompts)], np.float64)
