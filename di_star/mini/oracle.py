"""The mini world's ORACLE REWARD: a differentiable version of the gold judge
(di_star.mini.gold), so a run can be rewarded by (nearly) the thing the learned proxy stands for.
It is a reward, never the measurement: `mini_gold`, with its hard masks and connected components,
stays the judge every report uses.

The judge's four steps, made smooth (same constants, same posteriors, same score formula):
1. Background: per row, the median of the two outermost columns on each side (of four values:
   the mean of the middle two, as numpy's median). Foreground = sigmoid((distance to the row's
   background - FG_THRESHOLD) / FG_TEMPERATURE) instead of a hard threshold.
2. Objects: the world puts at most one object in each cell of its 3x3 grid, so instead of
   connected components every cell holds one soft object: the foreground mass times a soft cell
   membership (per axis, a softmax over the three cell centres: a smooth Voronoi partition).
   Per object: mass (area), mass-weighted mean colour and centroid, a soft maximum radius, and the
   judge's three shape descriptors with a soft bounding box (soft extreme coordinates) and a soft
   convex hull (the polygon of HULL_DIRECTIONS soft support lines). An object exists with
   probability sigmoid((area - MIN_AREA) / AREA_TEMPERATURE).
3. The judge's own colour / shape / size posteriors of those features (di_star.mini.gold
   functions' formulas, in torch), times the existence probability.
4. The judge's score: groups (top-count matches, extra matches cost, asked regions by cell),
   relation logistic, background closeness, soft colour mass; the preference terms (saturation,
   size, cleanliness with the kept share of the foreground, centredness);
   0.75 F + 0.25 P, or P alone when the prompt asks nothing.
Images come as the trainer's rewards get them: float [N, 3, H, W] in [0, 1] (clamped, as the
judge sees 8-bit pixels). Validation: `distar lab oracle-check` measures its
Spearman correlation with the hard gold on generator samples (docs/mini_quality/oracle_check.json).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from evalsuite.metrics.base import MetricInfo, check_prompts
from di_star.mini import gold
from di_star.mini.scene import (BACKGROUND_RGB, CELL_CENTRES, COLOURS, GRADIENT, POSITIONS,
                                  SHAPES, Request, in_region, parse_caption)

VERSION = "mini-oracle-v1"
FG_TEMPERATURE = 3.0       # RGB units: the foreground sigmoid's width around the judge's 60
CELL_SHARPNESS = 4.0       # logit change per px across a cell boundary (about a 1 px transition)
EXTREME_TEMPERATURE = 0.1  # px: the soft maximum of radii and coordinates
EXTREME_GATE = 0.5         # mass below which a pixel takes no part in a soft maximum
AREA_TEMPERATURE = 0.5     # px: existence = sigmoid((area - MIN_AREA) / this)
COLOUR_MASS_SIGMA = 12.0   # RGB units: the soft "nearest palette colour" of each pixel
HULL_DIRECTIONS = 64
_EPS = 1e-6


@dataclass(frozen=True)
class Temperatures:
    """The widths of the soft pipeline's smooth decisions: the oracle's (SHARP) keep them near the
    judge's hard ones, so it ranks like the judge; wider ones give a smoother landscape (the
    straight-through oracle's gradient, below)."""
    fg: float = FG_TEMPERATURE             # RGB units: foreground sigmoid
    cell: float = CELL_SHARPNESS           # cell partition sharpness (smaller = smoother)
    extreme: float = EXTREME_TEMPERATURE   # px: soft maxima (radius, bounding box, hull)
    area: float = AREA_TEMPERATURE         # px: existence sigmoid
    colour_mass: float = COLOUR_MASS_SIGMA  # RGB units: soft nearest palette colour

    def tag(self) -> str:
        """'fg3-cell4-ext0.1-area0.5-cm12': names the temperatures in a version."""
        return (f"fg{self.fg:g}-cell{self.cell:g}-ext{self.extreme:g}-area{self.area:g}"
                f"-cm{self.colour_mass:g}")


SHARP = Temperatures()
# The straight-through oracle's gradient temperatures, chosen by the latent-ascent probe
# (`python -m di_star.mini.probes.oracle_ascent latent --reward mini_oracle_st --prompts 12
# --steps 60 --temps ...`, docs/training.md): the hard gold rose least with WIDER temperatures
# (fg 8, 15, 30: +0.016, -0.006, -0.005) and most with the oracle's own (+0.037 [+0.002, +0.069]),
# so the measured best is SHARP; a smoother gradient that climbs the judge is still to be found.
ST_VERSION = "mini-oracle-st-v1"
ST_TEMPERATURES = SHARP


@lru_cache(maxsize=4096)
def _request(prompt: str) -> Request:
    return parse_caption(prompt)


def _palette(device) -> Tensor:
    return torch.tensor([gold.PALETTE[c] for c in COLOURS], dtype=torch.float32, device=device)


def background(a: Tensor) -> Tensor:
    """[N, H, W, 3] pixels (0-255) -> [N, H, 3]: per row, numpy's median of the 4 border values."""
    border = torch.cat([a[:, :, :2], a[:, :, -2:]], dim=2).sort(dim=2).values
    return border[:, :, 1:3].mean(2)


def cell_weights(h: int, w: int, device, sharpness: float = CELL_SHARPNESS) -> Tensor:
    """[9, H, W] soft membership of each pixel in each grid cell (sums to 1 per pixel), cells in
    POSITIONS order; the boundaries lie halfway between the world's cell centres."""
    centres = torch.tensor(CELL_CENTRES, dtype=torch.float32, device=device) * (w / 64.0) - 0.5

    def axis(n: int) -> Tensor:  # [3, n]: softmax over centres of -(x - c)^2 / (2 s^2)
        x = torch.arange(n, dtype=torch.float32, device=device)
        s2 = (centres[1] - centres[0]) / sharpness
        return torch.softmax(-(x[None] - centres[:, None]) ** 2 / (2 * s2), dim=0)

    rows, cols = axis(h), axis(w)
    return (rows[:, None, :, None] * cols[None, :, None, :]).reshape(9, h, w)


def soft_extreme(values: Tensor, mass: Tensor, temperature: float = EXTREME_TEMPERATURE) -> Tensor:
    """A soft maximum of `values` over the last dim among the object's pixels: those with mass
    above EXTREME_GATE (a selection, like the judge's mask; constant almost everywhere), weighted
    by their mass, so a half-foreground edge pixel counts half. Without the gate, the faint mass
    of far background pixels would win any soft maximum of distances."""
    logits = torch.where(mass.detach() > EXTREME_GATE,
                         values / temperature + torch.log(mass.clamp_min(1e-12)),
                         torch.full_like(values, -1e9))  # an empty cell: a plain mean, harmless
    return (torch.softmax(logits, dim=-1) * values).sum(-1)


def _hull_area(px: Tensor, mass: Tensor, temperature: float = EXTREME_TEMPERATURE) -> Tensor:
    """Soft convex-hull area of pixel squares: the polygon cut by HULL_DIRECTIONS support lines,
    each line's offset a soft maximum of the pixel centres' projections (+ a pixel's half-width
    along the direction, as the judge's hull is of pixel corners). px: [P, 2], mass: [..., P]."""
    theta = torch.arange(HULL_DIRECTIONS, dtype=px.dtype, device=px.device) * (2 * math.pi / HULL_DIRECTIONS)
    u = torch.stack([theta.cos(), theta.sin()], 1)                     # [K, 2]
    proj = (px @ u.T).transpose(1, 2)                                  # [9, K, P]
    h = soft_extreme(proj.expand(mass.shape[0], *proj.shape), mass[:, :, None, :], temperature)  # [N, 9, K]
    h = h + 0.5 * (u[:, 0].abs() + u[:, 1].abs())
    # vertex k = the intersection of lines k and k+1 (Cramer's rule), then the shoelace formula
    u2, h2 = u.roll(-1, 0), h.roll(-1, -1)
    det = u[:, 0] * u2[:, 1] - u[:, 1] * u2[:, 0]
    vx = (h * u2[:, 1] - h2 * u[:, 1]) / det
    vy = (u[:, 0] * h2 - u2[:, 0] * h) / det
    return 0.5 * (vx * vy.roll(-1, -1) - vx.roll(-1, -1) * vy).sum(-1).abs()


def _windows(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each cell's object lies within half an image side around its cell centre, so the soft
    extremes (the costly part) look only there: m [N, 9, H, W] -> (mass [N, 9, P'], x [9, P'],
    y [9, P']) with P' = (H / 2)^2, zero mass where a window leaves the image."""
    n, _, h, w = m.shape
    side = (h + 1) // 2
    pad = F.pad(m, (side, side, side, side))
    out, xs, ys = [], [], []
    for k in range(9):
        r, c = divmod(k, 3)
        y0 = int(round(CELL_CENTRES[r] * h / 64.0)) - side // 2
        x0 = int(round(CELL_CENTRES[c] * w / 64.0)) - side // 2
        out.append(pad[:, k, y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side].reshape(n, -1))
        gy, gx = torch.meshgrid(torch.arange(y0, y0 + side, device=m.device, dtype=m.dtype),
                                torch.arange(x0, x0 + side, device=m.device, dtype=m.dtype), indexing="ij")
        xs.append(gx.reshape(-1))
        ys.append(gy.reshape(-1))
    return torch.stack(out, 1), torch.stack(xs), torch.stack(ys)


def objects(a: Tensor, fg: Tensor, temps: Temperatures = SHARP) -> dict[str, Tensor]:
    """Soft per-cell objects of [N, H, W, 3] pixels with soft foreground fg [N, H, W]: each a
    [N, 9] (or [N, 9, ...]) tensor, cells in POSITIONS order."""
    n, h, w = fg.shape
    dev = fg.device
    cells = fg[:, None] * cell_weights(h, w, dev, temps.cell)[None]                      # [N, 9, H, W]
    m = cells.reshape(n, 9, h * w)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    area = m.sum(-1)
    safe = area.clamp_min(_EPS)
    cx, cy = (m * xs).sum(-1) / safe, (m * ys).sum(-1) / safe
    colour = torch.einsum("nkp,npc->nkc", m, a.reshape(n, h * w, 3)) / safe[..., None]
    mw, wx, wy = _windows(cells)                                             # [N, 9, P'], [9, P']
    r = torch.sqrt((wx - cx[..., None]) ** 2 + (wy - cy[..., None]) ** 2 + _EPS)
    t = temps.extreme
    radius = soft_extreme(r, mw, t) + 0.5
    width = soft_extreme(wx.expand_as(mw), mw, t) + soft_extreme(-wx.expand_as(mw), mw, t) + 1
    height = soft_extreme(wy.expand_as(mw), mw, t) + soft_extreme(-wy.expand_as(mw), mw, t) + 1
    hull = _hull_area(torch.stack([wx, wy], -1) + 0.5, mw, t)
    desc = torch.stack([area / (width * height).clamp_min(1.0),
                        area / (math.pi * radius ** 2),
                        (area / hull.clamp_min(1.0)).clamp(max=1.0)], -1)
    exists = torch.sigmoid((area - gold.MIN_AREA) / temps.area)
    return {"area": area, "cx": cx, "cy": cy, "colour": colour, "radius": radius, "desc": desc,
            "exists": exists, "merged": merged(fg, exists)}


def _bridges(fg: Tensor) -> list[tuple[int, int, Tensor]]:
    """(cell k, cell l, [N] bridge) for each pair of side-by-side cells: the largest product of
    three consecutive foreground values straddling their boundary, along the boundary's extent
    (1 when an unbroken run of foreground crosses it, i.e. one connected component spans both)."""
    n, h, w = fg.shape
    ix = [int(round((CELL_CENTRES[i] + CELL_CENTRES[i + 1]) / 2 * w / 64.0 - 0.5)) for i in range(2)]
    iy = [int(round((CELL_CENTRES[i] + CELL_CENTRES[i + 1]) / 2 * h / 64.0 - 0.5)) for i in range(2)]
    rows = [(0, iy[0]), (iy[0], iy[1]), (iy[1], h)]
    cols = [(0, ix[0]), (ix[0], ix[1]), (ix[1], w)]
    out = []
    for r in range(3):
        for c in range(2):  # cells (r, c) | (r, c + 1): a run across column ix[c]
            x = ix[c]
            band = fg[:, rows[r][0]:rows[r][1]]
            out.append((3 * r + c, 3 * r + c + 1, (band[..., x - 1] * band[..., x] * band[..., x + 1]).amax(-1)))
    for c in range(3):
        for r in range(2):  # cells (r, c) over (r + 1, c): a run across row iy[r]
            y = iy[r]
            band = fg[:, :, cols[c][0]:cols[c][1]]
            out.append((3 * r + c, 3 * (r + 1) + c, (band[:, y - 1] * band[:, y] * band[:, y + 1]).amax(-1)))
    return out


def merged(fg: Tensor, exists: Tensor) -> Tensor:
    """[N, 9] probability that a cell's object is joined to an object in a neighbouring cell:
    the judge's connected components then see one blob of no clean shape instead of two objects,
    so a joined object matches nothing."""
    out = torch.zeros_like(exists)
    for k, l, b in _bridges(fg):
        out[:, k] = torch.maximum(out[:, k].clone(), b * exists[:, l])
        out[:, l] = torch.maximum(out[:, l].clone(), b * exists[:, k])
    return out


def colour_posterior(rgb: Tensor) -> Tensor:
    """[..., 3] -> [..., 6]: the judge's softmax over the palette of -d^2 / (2 * 40^2)."""
    d2 = ((rgb[..., None, :] - _palette(rgb.device)) ** 2).sum(-1)
    return torch.softmax(-d2 / (2 * gold.COLOUR_SIGMA ** 2), dim=-1)


def shape_posterior(desc: Tensor) -> Tensor:
    """[..., 3] -> [..., 5]: the judge's Gaussian likelihoods of (fill, compactness, solidity)."""
    mu = torch.tensor([gold.SHAPE_STATS[s][0] for s in SHAPES], device=desc.device)
    sd = torch.tensor([gold.SHAPE_STATS[s][1] for s in SHAPES], device=desc.device)
    ll = -0.5 * (((desc[..., None, :] - mu) / sd) ** 2).sum(-1)
    return torch.softmax(ll, dim=-1)


def large_probability(radius: Tensor, shape: Tensor) -> Tensor:
    """The judge's size posterior P(large), averaged over the shape posterior."""
    factor = torch.tensor([gold.RADIUS_FACTOR[s] for s in SHAPES], device=radius.device)
    z = (radius[..., None] / factor - gold.SIZE_THRESHOLD) / gold.SIZE_SCALE
    return (shape * torch.sigmoid(z)).sum(-1)


def _group(obj: dict, k: int, g) -> tuple[Tensor, Tensor]:
    """Sample k's score for one group and the index of its best-matching cell."""
    m = obj["exists"][k] * (1 - obj["merged"][k])
    if g.colour:
        m = m * obj["colour_post"][k][:, COLOURS.index(g.colour)]
    if g.shape:
        m = m * obj["shape_post"][k][:, SHAPES.index(g.shape)]
    if g.size:
        large = obj["large"][k]
        m = m * (large if g.size == "large" else 1 - large)
    ranked, order = m.sort(descending=True)
    score = ranked[:g.count].sum() / g.count * torch.exp(-ranked[g.count:].sum())
    if g.position:
        inside = torch.tensor([float(in_region(POSITIONS[int(i)], g.position)) for i in order[:g.count]],
                              device=m.device)
        score = score * inside.mean()
    return score, order[0]


def _background_score(bg: Tensor, asked: str) -> Tensor:
    if asked == "gradient":
        lo, hi = (torch.tensor(c, dtype=bg.dtype, device=bg.device) for c in GRADIENT)
        target = torch.linspace(0, 1, len(bg), device=bg.device)[:, None] * (hi - lo) + lo
    else:
        target = torch.tensor(BACKGROUND_RGB[asked], dtype=bg.dtype, device=bg.device).expand_as(bg)
    d = torch.sqrt(((bg - target) ** 2).sum(1) + _EPS).mean()
    return torch.exp(-(d / 40.0) ** 2)


def faithfulness(obj: dict, k: int, a: Tensor, fg: Tensor, bg: Tensor, req: Request,
                 colour_mass: float = COLOUR_MASS_SIGMA) -> Tensor | None:
    """The judge's faithfulness F of sample k, or None when the prompt asks nothing."""
    items, best = [], []
    for g in req.groups:
        s, b = _group(obj, k, g)
        items.append(s)
        best.append(b)
    if req.relation and len(best) >= 2:
        i, j = best[0], best[1]
        xa, ya, xb, yb = obj["cx"][k, i], obj["cy"][k, i], obj["cx"][k, j], obj["cy"][k, j]
        offset = {"above": yb - ya, "below": ya - yb, "left of": xb - xa, "right of": xa - xb}[req.relation]
        items.append(torch.sigmoid((offset - gold.RELATION_MARGIN) / gold.RELATION_SCALE))
    if req.background:
        items.append(_background_score(bg[k], req.background))
    asked = sorted({COLOURS.index(g.colour) for g in req.groups if g.colour})
    if asked:
        d2 = ((a[k][..., None, :] - _palette(a.device)) ** 2).sum(-1)          # [H, W, 6]
        share = torch.softmax(-d2 / (2 * colour_mass ** 2), -1)[..., asked].sum(-1)
        items.append((fg[k] * share).sum() / fg[k].sum().clamp_min(_EPS))
    return torch.stack(items).mean() if items else None


def preference_parts(obj: dict, a: Tensor, fg: Tensor, bg: Tensor) -> dict[str, Tensor]:
    """[N] each: saturation, size, cleanliness and centredness as the judge defines them."""
    n, h, w = fg.shape
    total = fg.sum((1, 2))
    hi, lo = a.max(-1).values, a.min(-1).values
    sat = torch.where(hi > 0, (hi - lo) / hi.clamp_min(1e-6), torch.zeros_like(hi))
    saturation = ((fg * sat).sum((1, 2)) / total.clamp_min(_EPS) / 0.8).clamp(max=1.0)
    size = (fg.mean((1, 2)) / 0.1).clamp(max=1.0)
    off = 1 - fg
    resid = (a - bg[:, :, None]).abs().mean(-1)
    residual = (off * resid).sum((1, 2)) / off.sum((1, 2)).clamp_min(_EPS)
    kept = ((obj["exists"] * obj["area"]).sum(1) / total.clamp_min(_EPS)).clamp(max=1.0)
    clean = torch.exp(-residual / 8.0) * kept
    ys, xs = torch.meshgrid(torch.arange(h, device=a.device, dtype=a.dtype),
                            torch.arange(w, device=a.device, dtype=a.dtype), indexing="ij")
    cx = (fg * xs).sum((1, 2)) / total.clamp_min(_EPS)
    cy = (fg * ys).sum((1, 2)) / total.clamp_min(_EPS)
    d = torch.sqrt((cx - (w - 1) / 2) ** 2 + (cy - (h - 1) / 2) ** 2 + _EPS)
    centred = (1 - d / 32.0).clamp(min=0.0) * torch.sigmoid(total - 0.5)
    return {"saturation": saturation, "size": size, "clean": clean, "centred": centred}


def oracle_scores(images: Tensor, prompts: Sequence[str], temps: Temperatures = SHARP) -> Tensor:
    """[N] differentiable oracle scores in [0, 1] of images [N, 3, H, W] in [0, 1]."""
    a = images.float().clamp(0, 1).permute(0, 2, 3, 1) * 255.0
    bg = background(a)
    dist = torch.sqrt(((a - bg[:, :, None]) ** 2).sum(-1) + _EPS)
    fg = torch.sigmoid((dist - gold.FG_THRESHOLD) / temps.fg)
    obj = objects(a, fg, temps)
    obj["colour_post"] = colour_posterior(obj["colour"])
    obj["shape_post"] = shape_posterior(obj["desc"])
    obj["large"] = large_probability(obj["radius"], obj["shape_post"])
    pref = preference_parts(obj, a, fg, bg)
    out = []
    for k, prompt in enumerate(prompts):
        req = _request(prompt)
        parts = [pref["saturation"][k], pref["size"][k], pref["clean"][k]]
        if not req.relation and not any(g.position for g in req.groups):
            parts.append(pref["centred"][k])
        p = torch.stack(parts).mean()
        f = faithfulness(obj, k, a, fg, bg, req, temps.colour_mass)
        out.append(p if f is None else gold.WEIGHT_F * f + (1 - gold.WEIGHT_F) * p)
    return torch.stack(out)


def hard_gold(images: Tensor, prompts: Sequence[str]) -> Tensor:
    """[N] the hard gold judge's scores of images [N, 3, H, W] in [0, 1] as it sees them
    (clamped, 8-bit): the number `mini_gold` gives their PNGs. No gradient."""
    px = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    px = px.permute(0, 2, 3, 1).cpu().numpy()
    return torch.tensor([gold.gold_one(im, p) for im, p in zip(px, prompts)], dtype=torch.float32,
                        device=images.device)


def straight_through_scores(images: Tensor, prompts: Sequence[str],
                            temps: Temperatures = ST_TEMPERATURES) -> Tensor:
    """[N] the straight-through oracle: the VALUE is the hard gold judge's, exactly; the GRADIENT
    is the soft pipeline's at the wider `temps` (the sharp oracle's gradient sits on the few
    pixels at its thresholds and is a poor ascent direction, docs/training.md)."""
    smooth = oracle_scores(images, prompts, temps)
    return hard_gold(images, prompts) + (smooth - smooth.detach())


class MiniOracle:
    """The oracle reward as a metric (`mini_oracle`): `score_tensor` for the trainer, `score` for
    `distar eval`. Pure pixel rules, no weights; its version names the judge's it smooths."""
    info = MetricInfo("mini_oracle", f"{VERSION} (of {gold.VERSION})", "none (soft pixel rules)",
                      "RGB in [0, 1], clamped (the world draws 64 px)")
    needs_prompts = True

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.device = torch.device("cpu" if device == "auto" else device)
        self.batch_size = batch_size

    @classmethod
    def version_key(cls, **_options) -> str:
        return cls.info.key

    @classmethod
    def from_pretrained(cls, device: str = "auto", batch_size: int = 64, **_shared_options) -> "MiniOracle":
        """Nothing to load; dtype and other shared options are ignored (it computes in fp32)."""
        return cls(device, batch_size)

    def _scores(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return oracle_scores(images, prompts)

    def score_tensor(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return self._scores(images, check_prompts(images, prompts))

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        prompts = check_prompts(images, prompts)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                px = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255.0)
                                  for im in images[i:i + self.batch_size]]).permute(0, 3, 1, 2)
                out.append(self._scores(px.to(self.device), prompts[i:i + self.batch_size]).cpu())
        return torch.cat(out).double().numpy() if out else np.zeros(0)


class MiniOracleST(MiniOracle):
    """The straight-through oracle as a metric (`mini_oracle_st`): its value is `mini_gold`'s, its
    gradient the soft pipeline's at `temps` (ST_TEMPERATURES, named in the version)."""
    info = MetricInfo("mini_oracle_st", f"{ST_VERSION} ({ST_TEMPERATURES.tag()}; of {gold.VERSION})",
                      "none (hard gold value, soft pixel rules' gradient)",
                      "RGB in [0, 1], clamped, 8-bit for the value (the world draws 64 px)")
    temps = ST_TEMPERATURES  # the probe overrides it on an instance to search temperatures

    def _scores(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return straight_through_scores(images, prompts, self.temps)
